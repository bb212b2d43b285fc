#include "runtime/store/store.hpp"

#include "runtime/store/providers.hpp"
#include "runtime/store/store_detail.hpp"

#include "runtime/logging.hpp"
#include "runtime/pg/connection.hpp"

#include <spdlog/spdlog.h>

#include <atomic>

namespace spool::store {

std::string_view to_string(priority p) noexcept {
  switch (p) {
    case priority::high:
      return "high";
    case priority::normal:
      return "normal";
    case priority::low:
      return "low";
  }
  return "normal";
}

std::optional<priority> parse_priority(std::string_view s) noexcept {
  for (auto p : {priority::high, priority::normal, priority::low})
    if (s == to_string(p))
      return p;
  return std::nullopt;
}

namespace {

using detail::with_retry;

std::string_view kind_name(record_kind k) {
  switch (k) {
    case record_kind::ok:
      return "ok";
    case record_kind::retry:
      return "retry";
    case record_kind::snooze:
      return "snooze";
    case record_kind::release:
      return "release";
    case record_kind::fail:
      return "fail";
  }
  return "fail";
}

std::string pipeline_json(const std::vector<pipeline_stage>& pipeline) {
  std::string out = "[";
  for (size_t i = 0; i < pipeline.size(); ++i) {
    auto& s = pipeline[i];
    if (i)
      out += ',';
    out += R"({"name":")" + json_escape(s.name) + R"(","after":[)";
    for (size_t j = 0; j < s.after.size(); ++j) {
      if (j)
        out += ',';
      out += '"' + json_escape(s.after[j]) + '"';
    }
    out += "],\"optional\":";
    out += s.optional ? "true" : "false";
    out += ",\"max_retries\":" + std::to_string(s.max_retries);
    out += ",\"max_lost\":" + std::to_string(s.max_lost);
    out += s.approval ? ",\"approval\":true}" : "}";
  }
  return out + "]";
}

std::vector<recorded> read_recorded(const pg::result& res) {
  std::vector<recorded> out;
  out.reserve(static_cast<size_t>(res.rows()));
  for (int i = 0; i < res.rows(); ++i)
    out.push_back({res.i64(i, 0), res.boolean(i, 1), res.str(i, 2)});
  return out;
}

} // namespace

namespace detail {

claimed_run read_claimed(const pg::result& res, int i, int64_t token) {
  claimed_run r;
  r.run_id = res.i64(i, 0);
  r.task_id = res.i64(i, 1);
  r.stage = res.str(i, 2);
  r.attempt = static_cast<int>(res.i64(i, 3));
  r.lease_token = token;
  r.failed_attempts = static_cast<int>(res.i64(i, 4));
  r.lost_attempts = static_cast<int>(res.i64(i, 5));
  r.snoozed = std::chrono::milliseconds{res.i64(i, 6)};
  r.max_retries = static_cast<int>(res.i64(i, 7));
  r.channel_id = res.str(i, 8);
  r.priority = res.str(i, 9);
  r.payload = res.str(i, 10);
  r.inputs = res.str(i, 11);
  if (res.columns() > 15 && !res.is_null(i, 15))
    r.context = res.str(i, 15);
  return r;
}

} // namespace detail

namespace {
std::atomic<int64_t> last_token{0};
}

int64_t next_lease_token() noexcept {
  return last_token.fetch_add(1, std::memory_order_acq_rel) + 1;
}

int64_t last_lease_token() noexcept {
  return last_token.load(std::memory_order_acquire);
}

outcome_record outcome_record::for_claim(const claimed_run& run, record_kind kind) {
  outcome_record o;
  o.run_id = run.run_id;
  o.attempt = run.attempt;
  o.lease_token = run.lease_token;
  o.kind = kind;
  return o;
}

std::vector<enqueued> store::enqueue(const std::vector<new_task>& tasks,
                                     const std::vector<pipeline_stage>& pipeline) {
  if (tasks.empty())
    return {};
  std::vector<std::string> clients, campaigns, channels, priorities, payloads;
  std::vector<std::optional<std::string>> keys;
  std::vector<double> estimates;
  // Each task's run estimates, one per pipeline stage: NULL when no task
  // has any (every run free).
  std::vector<double> run_costs;
  bool priced = std::any_of(tasks.begin(), tasks.end(),
                            [](const new_task& t) { return !t.run_estimates.empty(); });
  for (auto& t : tasks) {
    clients.push_back(t.client_id);
    campaigns.push_back(t.campaign_id);
    channels.push_back(t.channel_id);
    priorities.emplace_back(to_string(t.prio));
    payloads.push_back(t.payload);
    keys.push_back(t.idempotency_key);
    double sum = 0;
    for (size_t i = 0; priced && i < pipeline.size(); ++i) {
      double e = i < t.run_estimates.size() ? t.run_estimates[i] : 0;
      run_costs.push_back(e);
      sum += e;
    }
    estimates.push_back(t.estimated_cost.value_or(sum));
  }
  auto res = conn_.exec(
    "SELECT task_id, created FROM spool_enqueue($1, $2, $3, $4, $5::jsonb[], $6, $7, $8, $9)",
    {pg::array_literal(clients), pg::array_literal(campaigns), pg::array_literal(channels),
     pg::array_literal(priorities), pg::array_literal(payloads), pg::array_literal(keys),
     pg::array_literal(estimates), pipeline_json(pipeline),
     priced ? std::optional<std::string>{pg::array_literal(run_costs)} : std::nullopt},
    "enqueueing videos");
  std::vector<enqueued> out;
  for (int i = 0; i < res.rows(); ++i)
    out.push_back({res.i64(i, 0), res.boolean(i, 1)});
  return out;
}

void store::warm_up() {
  using namespace std::chrono_literals;
  conn_.exec("BEGIN");
  try {
    new_task t;
    t.channel_id = "warm-up";
    t.client_id = "warm-up";
    t.campaign_id = "warm-up";
    // Stage names no configuration can hold (they must match
    // [a-z][a-z0-9_]*): no real run is touched, even inside the transaction.
    enqueue({t}, {{"warm-up.a", {}, false, 0}, {"warm-up.b", {"warm-up.a"}, false, 0}});
    auto runs = claim("warm-up.a", 1, "warm-up", 60s);
    if (!runs.empty())
      record("warm-up", {outcome_record::for_claim(runs.front(), record_kind::ok)});
    claim("warm-up.b", 1, "warm-up", 60s);
    conn_.exec("ROLLBACK");
  } catch (...) {
    try {
      conn_.exec("ROLLBACK");
    } catch (...) {
    }
    throw;
  }
}

std::vector<claimed_run> store::claim(std::string_view stage, int limit,
                                      std::string_view worker,
                                      std::chrono::milliseconds lease, int64_t token) {
  return claim_limited(stage, limit, worker, lease, {}, {}, token).runs;
}

std::vector<recorded> store::record(std::string_view worker,
                                    const std::vector<outcome_record>& outcomes) {
  if (outcomes.empty())
    return {};
  std::vector<std::string> workers, kinds, classes, messages;
  std::vector<std::optional<std::string>> outputs;
  std::vector<int64_t> runs, attempts, tokens, delays, started, finished;
  std::vector<double> costs;
  for (auto& o : outcomes) {
    workers.emplace_back(worker);
    runs.push_back(o.run_id);
    attempts.push_back(o.attempt);
    tokens.push_back(o.lease_token);
    kinds.emplace_back(kind_name(o.kind));
    delays.push_back(o.delay.count());
    outputs.push_back(o.kind == record_kind::ok ? std::optional{o.output} : std::nullopt);
    costs.push_back(o.cost);
    classes.push_back(o.error_class);
    messages.push_back(o.message);
    started.push_back(o.started_us);
    finished.push_back(o.finished_us);
  }
  pg::params ps{pg::array_literal(workers),  pg::array_literal(runs),
                pg::array_literal(attempts), pg::array_literal(tokens),
                pg::array_literal(kinds),
                pg::array_literal(delays),   pg::array_literal(outputs),
                pg::array_literal(costs),    pg::array_literal(classes),
                pg::array_literal(messages), pg::array_literal(started),
                pg::array_literal(finished)};
  return read_recorded(with_retry(conn_, [&] {
    return conn_.exec_prepared(
      "SELECT run_id, accepted, state FROM spool_record_outcomes($1, $2, $3, $4, $5, $6, "
      "$7::jsonb[], $8, $9, $10, $11, $12)",
      ps, "recording stage outcomes");
  }));
}

std::vector<recorded> store::record_isolating(std::string_view worker,
                                              const std::vector<outcome_record>& recs) {
  try {
    return record(worker, recs);
  } catch (const pg::error& e) {
    if (e.transient())
      throw; // the caller keeps the batch and tries again later
    if (recs.size() > 1) {
      auto mid = recs.begin() + static_cast<std::ptrdiff_t>(recs.size() / 2);
      auto out = record_isolating(worker, {recs.begin(), mid});
      auto rest = record_isolating(worker, {mid, recs.end()});
      out.insert(out.end(), rest.begin(), rest.end());
      return out;
    }
    auto bad = recs.front();
    spdlog::error("recording the outcome of run {} attempt {} failed ({}: {}); failing the run",
                  bad.run_id, bad.attempt, e.sqlstate(), e.message());
    bad.kind = record_kind::fail;
    bad.output = "{}";
    bad.cost = 0;
    bad.error_class = "permanent";
    bad.message = "the database refused this outcome: " + e.message() + " (SQLSTATE "
                  + e.sqlstate() + ")";
    try {
      return record(worker, {bad});
    } catch (const pg::error& e2) {
      if (e2.transient())
        throw;
      spdlog::error("recording run {} as failed was refused too ({}: {}); its lease will "
                    "expire and be rescued",
                    bad.run_id, e2.sqlstate(), e2.message());
      return {{bad.run_id, false, "unrecordable"}};
    }
  }
}

std::vector<heartbeat_note> store::heartbeat(std::string_view worker,
                                             std::chrono::milliseconds lease,
                                             const std::vector<held_claim>& held,
                                             int64_t horizon) {
  std::vector<int64_t> runs, attempts, tokens;
  for (auto& h : held) {
    runs.push_back(h.run_id);
    attempts.push_back(h.attempt);
    tokens.push_back(h.lease_token);
  }
  auto res = with_retry(conn_, [&] {
    return conn_.exec_prepared(
      "SELECT what, run_id, attempt, token FROM spool_heartbeat($1, $2, $3, $4, $5, $6)",
      {pg::to_param(worker), pg::to_param(static_cast<int64_t>(lease.count())),
       pg::array_literal(runs), pg::array_literal(attempts), pg::array_literal(tokens),
       pg::to_param(horizon)},
      "heartbeat");
  });
  std::vector<heartbeat_note> out;
  for (int i = 0; i < res.rows(); ++i)
    out.push_back({res.text(i, 0) == "lost" ? heartbeat_note::what::lost
                                            : heartbeat_note::what::released,
                   {res.i64(i, 1), static_cast<int>(res.i64(i, 2)), res.i64(i, 3)}});
  return out;
}

std::vector<recorded> store::rescue(int limit) {
  return read_recorded(with_retry(conn_, [&] {
    return conn_.exec_prepared("SELECT run_id, accepted, state FROM spool_rescue($1)",
                               {pg::to_param(limit)}, "rescuing expired leases");
  }));
}

void store::register_worker(const worker_info& w) {
  conn_.query("INSERT INTO workers (id, host, pid, config_version, stages, lease_ms, "
              "http_address) VALUES ($1, $2, $3, $4, $5, $6, nullif($7, '')) "
              "ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, "
              "config_version = EXCLUDED.config_version, stages = EXCLUDED.stages, "
              "lease_ms = EXCLUDED.lease_ms, http_address = EXCLUDED.http_address, "
              "last_heartbeat = now(), stopped_at = NULL",
              w.id, w.host, w.pid, w.config_version, pg::array_literal(w.stages),
              static_cast<int64_t>(w.lease.count()), w.http_address);
}

void store::worker_stopped(std::string_view worker) {
  conn_.query("UPDATE workers SET stopped_at = now() WHERE id = $1", worker);
}

bool store::set_priority(int64_t task_id, priority p) {
  return with_retry(conn_, [&] {
           return conn_.query("SELECT spool_set_priority($1, $2)", task_id, to_string(p));
         })
    .boolean(0, 0);
}

std::vector<store::cancelled_run> store::cancel(int64_t task_id) {
  auto res = with_retry(conn_, [&] {
    return conn_.query("SELECT run_id, was_running FROM spool_cancel($1)", task_id);
  });
  std::vector<cancelled_run> out;
  for (int i = 0; i < res.rows(); ++i)
    out.push_back({res.i64(i, 0), res.boolean(i, 1)});
  return out;
}

std::string store::approve(int64_t task_id, std::string_view by, std::string_view note) {
  return with_retry(conn_, [&] {
           return conn_.query("SELECT spool_approve($1, $2, $3)", task_id, by, note);
         })
    .str(0, 0);
}

std::string store::reject(int64_t task_id, std::string_view by, std::string_view reason) {
  return with_retry(conn_, [&] {
           return conn_.query("SELECT spool_reject($1, $2, $3)", task_id, by, reason);
         })
    .str(0, 0);
}

bool store::has_pending_work(const std::vector<std::string>& stages) {
  // One probe per partial index, each the first entry in its order: cheap at
  // any depth. (An EXISTS over "state IN (...)" may be planned as a scan of
  // the whole table, which at a million finished runs takes seconds.)
  pg::param filter;
  if (!stages.empty())
    filter = pg::array_literal(stages);
  return conn_
    .exec_prepared(
      "SELECT coalesce("
      "(SELECT true FROM stage_runs WHERE state = 'ready' "
      "  AND ($1::text[] IS NULL OR stage = ANY ($1::text[])) "
      "  ORDER BY stage, priority, fair_round, fair_seq LIMIT 1), "
      "(SELECT true FROM stage_runs WHERE state = 'running' "
      "  AND ($1::text[] IS NULL OR stage = ANY ($1::text[])) ORDER BY lease_expires_at LIMIT 1), "
      "(SELECT true FROM stage_runs WHERE state = 'scheduled' "
      "  AND ($1::text[] IS NULL OR stage = ANY ($1::text[])) ORDER BY stage, ready_at LIMIT 1), "
      "false)",
      {filter}, "checking for pending work")
    .boolean(0, 0);
}

} // namespace spool::store
