#include "runtime/store/cluster_metrics.hpp"

#include "runtime/metrics.hpp"
#include "runtime/pg/connection.hpp"

namespace spool::store {

std::vector<stage_limit> stage_limits_of(const config::snapshot& cfg) {
  std::vector<stage_limit> out;
  for (auto& s : cfg.stages)
    out.push_back({s.name, s.timeout_s, s.timeout_per, s.timeout_max_s, s.retry.base_s});
  return out;
}

namespace {

/// A budget scope as a label: 'total' -> cluster, 'client:x' -> client/x.
std::string scope_label(const std::string& scope) {
  if (scope == "total")
    return "cluster";
  if (scope.starts_with("client:"))
    return "client/" + scope.substr(7);
  return scope;
}

} // namespace

void collect_cluster_metrics(pg::connection& conn, const config::snapshot& cfg,
                             metrics::registry& out) {
  // Tasks: by state (every state, zero included), approved, and past their
  // estimate in the current budget day.
  auto& jobs = out.gauges("job_status_gauge", "Tasks by state.", {"state"});
  auto tasks = conn.exec(
    "SELECT s::text, count(t.id), count(t.id) FILTER (WHERE t.approved), "
    "count(t.id) FILTER (WHERE t.overrun_at >= d.day_start) "
    "FROM unnest(enum_range(NULL::spool_task_state)) s "
    "CROSS JOIN spool_budget_day(now()) d "
    "LEFT JOIN tasks t ON t.state = s GROUP BY s ORDER BY s",
    {}, "counting tasks");
  double approved = 0, over = 0;
  for (int i = 0; i < tasks.rows(); ++i) {
    jobs.with({tasks.str(i, 0)}).set(static_cast<double>(tasks.i64(i, 1)));
    approved += static_cast<double>(tasks.i64(i, 2));
    over += static_cast<double>(tasks.i64(i, 3));
  }
  out.gauges("spool_tasks_approved", "Tasks approved for the stages after review.")
    .with({})
    .set(approved);
  out.gauges("spool_tasks_over_estimate_today",
             "Tasks whose actual cost passed budgets.overrun_factor times their estimate "
             "during the current budget day.")
    .with({})
    .set(over);

  // Stage runs by stage and state; every state of a configured stage.
  auto& runs = out.gauges("spool_runs", "Stage runs by stage and state (ready: the ready "
                                        "depth).",
                          {"stage", "state"});
  auto states = conn.exec("SELECT unnest(enum_range(NULL::spool_run_state))::text", {},
                          "listing run states");
  for (const auto& s : cfg.stages)
    for (int i = 0; i < states.rows(); ++i)
      runs.with({s.name, states.str(i, 0)});
  auto counts = conn.exec("SELECT stage, state::text, count(*) FROM stage_runs GROUP BY 1, 2",
                          {}, "counting stage runs");
  for (int i = 0; i < counts.rows(); ++i)
    runs.with({counts.str(i, 0), counts.str(i, 1)}).set(static_cast<double>(counts.i64(i, 2)));

  auto& oldest = out.gauges("spool_oldest_ready_age_seconds",
                            "Seconds the oldest ready run of the stage has waited (0: none).",
                            {"stage"});
  for (const auto& s : cfg.stages)
    oldest.with({s.name});
  auto ages = conn.exec("SELECT stage, extract(epoch FROM now() - min(ready_at))::float8 "
                        "FROM stage_runs WHERE state = 'ready' GROUP BY 1",
                        {}, "measuring ready age");
  for (int i = 0; i < ages.rows(); ++i)
    oldest.with({ages.str(i, 0)}).set(std::max(0.0, ages.f64(i, 1)));

  out.gauges("spool_stuck_runs",
             "Running runs past their timeout plus worker.stuck_margin_s (the next stuck-job "
             "sweep rescues them).")
    .with({})
    .set(static_cast<double>(
      count_stuck(conn, stage_limits_of(cfg), cfg.worker.stuck_margin_s)));

  // Providers.
  auto& in_use = out.gauges("spool_provider_slots_in_use",
                            "Calls of the provider in flight across all workers.", {"provider"});
  auto& slots = out.gauges("spool_provider_slots_limit",
                           "The provider's max_concurrent (providers with one).", {"provider"});
  auto& tokens = out.gauges("spool_provider_tokens",
                            "Tokens in the provider's bucket (providers with a rate).",
                            {"provider"});
  auto& used = out.gauges("spool_provider_quota_used_units",
                          "Quota units used in the current window.", {"provider"});
  auto& quota = out.gauges("spool_provider_quota_units", "The provider's daily quota.",
                           {"provider"});
  auto& ratio = out.gauges("spool_provider_quota_used_ratio",
                           "Quota used in the current window over the daily quota.",
                           {"provider"});
  auto& paused = out.gauges("spool_provider_paused",
                            "1 while the provider is paused (Retry-After or quota spent).",
                            {"provider"});
  auto& breaker = out.gauges("spool_provider_breaker_state",
                             "The provider's circuit breaker: 1 for its current state.",
                             {"provider", "state"});
  auto ps = conn.exec("SELECT name, max_concurrent, running, tokens, quota_units, quota_used, "
                      "paused_until IS NOT NULL, breaker_state FROM spool_providers_status(0)",
                      {}, "reading provider state");
  for (int i = 0; i < ps.rows(); ++i) {
    auto name = ps.str(i, 0);
    if (cfg.provider(name) == nullptr)
      continue; // left the configuration
    in_use.with({name}).set(static_cast<double>(ps.i64(i, 2)));
    if (!ps.is_null(i, 1))
      slots.with({name}).set(static_cast<double>(ps.i64(i, 1)));
    if (!ps.is_null(i, 3))
      tokens.with({name}).set(ps.f64(i, 3));
    if (!ps.is_null(i, 4)) {
      double q = ps.f64(i, 4), u = ps.is_null(i, 5) ? 0 : ps.f64(i, 5);
      quota.with({name}).set(q);
      used.with({name}).set(u);
      ratio.with({name}).set(q > 0 ? u / q : 0);
    }
    paused.with({name}).set(ps.boolean(i, 6) ? 1 : 0);
    auto state = ps.str(i, 7);
    for (const char* s : {"closed", "open", "half_open"})
      breaker.with({name, s}).set(state == s ? 1 : 0);
  }

  // Budgets: the current day's spend and reservations per scope.
  auto& spent = out.gauges("spool_budget_spent_dollars",
                           "USD spent in the current budget day (scope: cluster, or "
                           "client/<id> for clients with a budget).",
                           {"scope"});
  auto& reserved = out.gauges("spool_budget_reserved_dollars",
                              "USD reserved by paid runs in flight.", {"scope"});
  auto& soft = out.gauges("spool_budget_soft_dollars", "The soft daily budget.", {"scope"});
  auto& hard = out.gauges("spool_budget_hard_dollars", "The hard daily budget.", {"scope"});
  auto& remaining = out.gauges("spool_budget_remaining_dollars",
                               "Hard budget minus spend and reservations.", {"scope"});
  auto money = conn.exec(
    "SELECT b.scope, b.soft_usd::float8, b.hard_usd::float8, coalesce(m.spent, 0)::float8, "
    "coalesce(m.reserved, 0)::float8 "
    "FROM spool_budgets b CROSS JOIN spool_budget_day(now()) d "
    "LEFT JOIN spool_money m ON m.day = d.day_start AND m.scope = b.scope ORDER BY 1",
    {}, "reading today's spend");
  for (int i = 0; i < money.rows(); ++i) {
    auto scope = scope_label(money.str(i, 0));
    double sp = money.f64(i, 3), re = money.f64(i, 4);
    spent.with({scope}).set(sp);
    reserved.with({scope}).set(re);
    if (!money.is_null(i, 1))
      soft.with({scope}).set(money.f64(i, 1));
    if (!money.is_null(i, 2)) {
      hard.with({scope}).set(money.f64(i, 2));
      remaining.with({scope}).set(money.f64(i, 2) - sp - re);
    }
  }

  // Live workers by the configuration they run.
  auto& workers = out.gauges("spool_workers",
                             "Live workers by the configuration checksum they run.",
                             {"config_version"});
  auto ws = conn.exec("SELECT coalesce(config_version, ''), count(*) FROM workers "
                      "WHERE stopped_at IS NULL "
                      "AND last_heartbeat > now() - lease_ms * interval '1 millisecond' "
                      "GROUP BY 1",
                      {}, "counting workers");
  for (int i = 0; i < ws.rows(); ++i)
    workers.with({ws.str(i, 0)}).set(static_cast<double>(ws.i64(i, 1)));
}

} // namespace spool::store
