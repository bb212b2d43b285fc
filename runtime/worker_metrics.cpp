#include "runtime/worker_metrics.hpp"

#include <chrono>

namespace spool {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Buckets of database round trips: 0.5 ms to 10 s.
std::vector<double> round_trip_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

} // namespace

worker_metrics::worker_metrics()
  : video_gen_(reg_.histograms("video_gen_duration_seconds",
                               "Seconds an attempt of the video_gen stage ran, start to "
                               "outcome.")),
    api_errors_(reg_.counters("replicate_api_errors_total",
                              "Attempts that ended in an error outcome, by the provider that "
                              "ran them (none: the stage has no provider).",
                              {"provider"})),
    cost_(reg_.counters("cost_actual_dollars",
                        "USD charged by the attempts this worker ran.", {"stage", "provider"})),
    calls_(reg_.counters("spool_provider_calls_total",
                         "Attempts that reached an outcome, by the provider that ran them.",
                         {"provider"})),
    stage_duration_(reg_.histograms("spool_stage_duration_seconds",
                                    "Seconds an attempt ran, start to outcome.", {"stage"})),
    outcomes_(reg_.counters("spool_outcomes_total",
                            "Attempts by outcome: ok, transient, network, permanent, "
                            "rate_limited, timeout.",
                            {"stage", "kind"})),
    retries_(reg_.counters("spool_retries_total", "Retries and snoozes scheduled.", {"stage"})),
    failed_(reg_.counters("spool_runs_failed_total", "Runs failed for good (no retry left).",
                          {"stage"})),
    claimed_(reg_.counters("spool_claimed_total", "Runs claimed.", {"stage"})),
    leases_lost_(reg_.counters("spool_leases_lost_total",
                               "Executions stopped because the database no longer "
                               "attributed their run to this worker.",
                               {"stage"})),
    rescues_(reg_.counters("spool_lease_rescues_total",
                           "Runs this worker's maintenance handed back to the queue: their "
                           "worker stopped heartbeating (lease_expired) or they ran far past "
                           "their timeout (stuck).",
                           {"reason"})),
    in_flight_(reg_.gauges("spool_in_flight", "Jobs executing in this worker.", {"stage"})),
    pool_size_(reg_.gauges("spool_pool_size", "Stage actors of the stage's pool (its "
                                              "per-worker limit).",
                           {"stage"})),
    claim_duration_(reg_.histograms("spool_claim_duration_seconds",
                                    "Round trip of one claim statement.", {"stage"},
                                    round_trip_buckets())),
    record_duration_(reg_.histograms("spool_record_duration_seconds",
                                     "Round trip of recording one batch of outcomes.", {},
                                     round_trip_buckets())
                       .with({})),
    config_info_(reg_.gauges("spool_config_info",
                             "The configuration in force: its checksum and the stored "
                             "version it came from (empty for a file). Always 1.",
                             {"version", "stored_version"})),
    config_reloads_(reg_.counters("spool_config_reloads_total",
                                  "Configuration changes by result: applied, unchanged, "
                                  "refused.",
                                  {"result"})),
    draining_(reg_.gauges("spool_worker_draining", "1 while the worker drains.").with({})),
    database_up_(reg_.gauges("spool_database_up",
                             "1 when the worker's last check of the database (its "
                             "readiness) succeeded.")
                   .with({})) {
  reg_.gauges("spool_worker_start_time_seconds", "Unix time the worker started.")
    .with({})
    .set(now_s());
  database_up_.set(1);
  for (const char* r : {"applied", "unchanged", "refused"})
    config_reloads_.with({r});
  for (const char* r : {"lease_expired", "stuck"})
    rescues_.with({r});
}

worker_metrics::stage_meters worker_metrics::stage(const std::string& name) {
  stage_meters m;
  m.duration = &stage_duration_.with({name});
  if (name == "video_gen")
    m.video_gen = &video_gen_.with({});
  m.claimed = &claimed_.with({name});
  m.retries = &retries_.with({name});
  m.failed = &failed_.with({name});
  m.leases_lost = &leases_lost_.with({name});
  m.in_flight = &in_flight_.with({name});
  m.pool_size = &pool_size_.with({name});
  m.claim_duration = &claim_duration_.with({name});
  m.ok = &outcomes_.with({name, "ok"}); // a stage with no outcome yet reads 0, not absent
  return m;
}

worker_metrics::provider_meters worker_metrics::provider(const std::string& stage,
                                                         const std::string& provider) {
  const std::string p = provider.empty() ? "none" : provider;
  return {&calls_.with({p}), &api_errors_.with({p}), &cost_.with({stage, p})};
}

void worker_metrics::attempt_finished(const stage_meters& m, const provider_meters& p,
                                      const std::string& stage, std::string_view kind,
                                      double seconds, double cost) {
  if (m.duration != nullptr)
    m.duration->observe(seconds);
  if (m.video_gen != nullptr)
    m.video_gen->observe(seconds);
  if (kind == "ok" && m.ok != nullptr)
    m.ok->inc();
  else
    outcomes_.with({stage, std::string{kind}}).inc();
  p.calls->inc();
  if (kind != "ok")
    p.errors->inc();
  p.cost->inc(cost); // ignores 0
}

void worker_metrics::rescued(const std::string& reason, double n) {
  rescues_.with({reason}).inc(n);
}

void worker_metrics::recorded(double seconds) {
  record_duration_.observe(seconds);
}

void worker_metrics::config_applied(std::shared_ptr<const config::snapshot> cfg,
                                    long long stored_version) {
  config_info_.clear();
  config_info_.with({cfg->version, stored_version > 0 ? std::to_string(stored_version) : ""})
    .set(1);
  std::lock_guard guard{config_mtx_};
  config_ = std::move(cfg);
}

std::shared_ptr<const config::snapshot> worker_metrics::config() const {
  std::lock_guard guard{config_mtx_};
  return config_;
}

void worker_metrics::config_reload(const std::string& result) {
  config_reloads_.with({result}).inc();
}

void worker_metrics::draining(bool on) {
  draining_.set(on ? 1 : 0);
}

void worker_metrics::database_up(bool up) {
  database_up_.set(up ? 1 : 0);
}

} // namespace spool
