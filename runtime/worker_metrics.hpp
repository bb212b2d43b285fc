#pragma once
// The metrics one worker process keeps about its own work: what it claimed,
// ran and recorded, how long that took, what it cost. Every worker serves
// them; summed over workers they describe the cluster. (What the database
// knows about the whole cluster, queue depth, provider and budget state, is
// collected by store::cluster_metrics, from one place.)
//
// Label values come from the configuration (stage and provider names),
// never from tasks. Hot paths resolve their series once (stage_meters,
// provider_meters) and then update atomics.
//
// Pure logic: no CAF, no I/O.

#include "runtime/config/config.hpp"
#include "runtime/metrics.hpp"

#include <memory>
#include <mutex>
#include <string>

namespace spool {

class worker_metrics {
public:
  worker_metrics();

  /// The series of one stage.
  struct stage_meters {
    metrics::histogram* duration = nullptr;       // spool_stage_duration_seconds
    metrics::histogram* video_gen = nullptr;      // video_gen_duration_seconds (stage video_gen)
    metrics::counter* claimed = nullptr;          // spool_claimed_total
    metrics::counter* retries = nullptr;          // spool_retries_total
    metrics::counter* failed = nullptr;           // spool_runs_failed_total
    metrics::counter* leases_lost = nullptr;      // spool_leases_lost_total
    metrics::gauge* in_flight = nullptr;          // spool_in_flight
    metrics::gauge* pool_size = nullptr;          // spool_pool_size
    metrics::histogram* claim_duration = nullptr; // spool_claim_duration_seconds
    metrics::counter* ok = nullptr;               // spool_outcomes_total{kind="ok"}
  };
  stage_meters stage(const std::string& name);

  /// The series of the attempts of one stage run by one provider ("" when
  /// the stage has none: labelled "none").
  struct provider_meters {
    metrics::counter* calls = nullptr;  // spool_provider_calls_total
    metrics::counter* errors = nullptr; // replicate_api_errors_total
    metrics::counter* cost = nullptr;   // cost_actual_dollars{stage, provider}
  };
  provider_meters provider(const std::string& stage, const std::string& provider);

  /// An attempt of `stage` ended with `kind` (outcome_kind as text) after
  /// `seconds`, charging `cost` USD. Lock-free for an ok outcome through
  /// resolved series; an error outcome takes its family's lock.
  void attempt_finished(const stage_meters& m, const provider_meters& p,
                        const std::string& stage, std::string_view kind, double seconds,
                        double cost);

  /// Runs rescued by this worker's maintenance: reason "lease_expired" or
  /// "stuck".
  void rescued(const std::string& reason, double n);

  /// One batch of outcomes recorded in `seconds`.
  void recorded(double seconds);

  /// The configuration in force and the stored version it came from (0: a
  /// file). Replaces the previous info series.
  void config_applied(std::shared_ptr<const config::snapshot> cfg, long long stored_version);
  /// The configuration in force (null before the first config_applied).
  std::shared_ptr<const config::snapshot> config() const;
  /// result: applied, unchanged or refused.
  void config_reload(const std::string& result);

  void draining(bool on);
  bool is_draining() const noexcept { return draining_.value() != 0; }
  /// Whether the worker's last check of the database (its readiness)
  /// succeeded.
  void database_up(bool up);

  metrics::registry& registry() noexcept { return reg_; }
  std::string render() const { return reg_.render(); }

private:
  metrics::registry reg_;
  metrics::family<metrics::histogram>& video_gen_;
  metrics::family<metrics::counter>& api_errors_;
  metrics::family<metrics::counter>& cost_;
  metrics::family<metrics::counter>& calls_;
  metrics::family<metrics::histogram>& stage_duration_;
  metrics::family<metrics::counter>& outcomes_;
  metrics::family<metrics::counter>& retries_;
  metrics::family<metrics::counter>& failed_;
  metrics::family<metrics::counter>& claimed_;
  metrics::family<metrics::counter>& leases_lost_;
  metrics::family<metrics::counter>& rescues_;
  metrics::family<metrics::gauge>& in_flight_;
  metrics::family<metrics::gauge>& pool_size_;
  metrics::family<metrics::histogram>& claim_duration_;
  metrics::histogram& record_duration_;
  metrics::family<metrics::gauge>& config_info_;
  metrics::family<metrics::counter>& config_reloads_;
  metrics::gauge& draining_;
  metrics::gauge& database_up_;
  mutable std::mutex config_mtx_;
  std::shared_ptr<const config::snapshot> config_;
};

} // namespace spool
