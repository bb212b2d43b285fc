#include "runtime/store/providers.hpp"

#include "runtime/pg/connection.hpp"
#include "runtime/store/store_detail.hpp"

#include <boost/json.hpp>

namespace spool::store {

namespace {

using detail::with_retry;
using time_point = std::chrono::system_clock::time_point;

time_point from_us(int64_t us) {
  return time_point{std::chrono::duration_cast<time_point::duration>(std::chrono::microseconds{us})};
}

std::optional<time_point> opt_time(const pg::result& res, int row, int col) {
  if (res.is_null(row, col))
    return std::nullopt;
  return from_us(res.i64(row, col));
}

/// A timestamptz column as microseconds since the epoch (NULL stays NULL).
std::string us(std::string_view column) {
  return "(extract(epoch FROM " + std::string{column} + ") * 1000000)::bigint";
}

std::vector<provider_event> parse_events(std::string_view json) {
  std::vector<provider_event> out;
  auto v = boost::json::parse(json);
  for (auto& e : v.as_array()) {
    auto& o = e.as_object();
    provider_event ev;
    ev.id = o.at("id").to_number<int64_t>();
    ev.at = from_us(o.at("at_us").to_number<int64_t>());
    ev.kind = o.at("kind").as_string();
    ev.message = o.at("message").as_string();
    if (auto* by = o.if_contains("logged_by"); by != nullptr && by->is_string())
      ev.logged_by = by->as_string();
    out.push_back(std::move(ev));
  }
  return out;
}

} // namespace

claim_result store::claim_limited(std::string_view stage, int limit, std::string_view worker,
                                  std::chrono::milliseconds lease, std::string_view provider,
                                  std::string_view fallback, int64_t token) {
  if (token == 0)
    token = next_lease_token();
  pg::params ps{pg::to_param(stage),
                pg::to_param(limit),
                pg::to_param(worker),
                pg::to_param(static_cast<int64_t>(lease.count())),
                pg::to_param(token),
                provider.empty() ? pg::param{} : pg::to_param(provider),
                fallback.empty() || provider.empty() ? pg::param{} : pg::to_param(fallback)};
  auto res = with_retry(conn_, [&] {
    return conn_.exec_prepared(
      "SELECT run_id, task_id, stage, attempt, failed_attempts, lost_attempts, snoozed_ms, "
      "max_retries, channel_id, priority, payload, inputs, provider, wait_ms, held_back, "
      "context FROM spool_claim($1, $2, $3, $4, $5, $6, $7)",
      ps, "claiming stage runs");
  });
  claim_result out;
  out.runs.reserve(static_cast<size_t>(res.rows()));
  for (int i = 0; i < res.rows(); ++i) {
    if (res.is_null(i, 0)) { // the last row: why the limits held the claim back
      if (!res.is_null(i, 12))
        out.held_provider = res.str(i, 12);
      out.held_back = res.str(i, 14);
      if (!res.is_null(i, 13))
        out.wait = std::chrono::milliseconds{res.i64(i, 13)};
      continue;
    }
    auto r = detail::read_claimed(res, i, token);
    if (!res.is_null(i, 12))
      r.provider = res.str(i, 12);
    out.runs.push_back(std::move(r));
  }
  return out;
}

void store::sync_providers(const std::string& providers_json) {
  with_retry(conn_, [&] {
    return conn_.exec("SELECT spool_sync_providers($1::jsonb)", {providers_json},
                      "writing provider limits");
  });
}

void store::sync_budgets(const std::string& budgets_json) {
  with_retry(conn_, [&] {
    return conn_.exec("SELECT spool_sync_budgets($1::jsonb)", {budgets_json},
                      "writing budgets");
  });
}

std::vector<provider_event> store::take_provider_events(std::string_view worker, int limit) {
  auto res = conn_.exec_prepared("SELECT id, provider, " + us("at")
                                   + ", kind, message, task_id "
                                     "FROM spool_take_provider_events($1, $2)",
                                 {pg::to_param(worker), pg::to_param(limit)},
                                 "taking provider events");
  std::vector<provider_event> out;
  out.reserve(static_cast<size_t>(res.rows()));
  for (int i = 0; i < res.rows(); ++i)
    out.push_back({res.i64(i, 0), res.str(i, 1), from_us(res.i64(i, 2)), res.str(i, 3),
                   res.str(i, 4), std::string{worker}, res.opt_i64(i, 5)});
  return out;
}

std::vector<provider_status> store::providers_status(int events) {
  auto res = conn_.exec(
    "SELECT name, max_concurrent, rate_per_s, rate_burst, quota_units, quota_reset_at, "
    "quota_time_zone, quota_window_s, quota_units_per_call, quota_units_field, "
    "breaker_consecutive, breaker_failure_rate, breaker_window, breaker_cooldown_s, "
    "breaker_probes, running, tokens, quota_used, "
      + us("quota_window_start") + ", " + us("quota_resets_at") + ", " + us("paused_until")
      + ", pause_reason, breaker_state, consecutive_failures, recent_calls, recent_failures, "
      + us("opened_at") + ", events FROM spool_providers_status($1)",
    {pg::to_param(events)}, "reading provider status");
  std::vector<provider_status> out;
  out.reserve(static_cast<size_t>(res.rows()));
  for (int i = 0; i < res.rows(); ++i) {
    provider_status p;
    p.name = res.str(i, 0);
    p.max_concurrent = static_cast<int>(res.i64(i, 1));
    p.rate_per_s = res.opt_f64(i, 2);
    p.rate_burst = res.opt_f64(i, 3);
    p.quota_units = res.opt_f64(i, 4);
    p.quota_reset_at = res.str(i, 5);
    p.quota_time_zone = res.str(i, 6);
    p.quota_window_s = res.f64(i, 7);
    p.quota_units_per_call = res.f64(i, 8);
    p.quota_units_field = res.str(i, 9);
    if (!res.is_null(i, 10))
      p.breaker = provider_status::breaker_limits{
        static_cast<int>(res.i64(i, 10)), res.f64(i, 11), static_cast<int>(res.i64(i, 12)),
        res.f64(i, 13), static_cast<int>(res.i64(i, 14))};
    p.running = res.i64(i, 15);
    p.tokens = res.opt_f64(i, 16);
    p.quota_used = res.opt_f64(i, 17);
    p.quota_window_start = opt_time(res, i, 18);
    p.quota_resets_at = opt_time(res, i, 19);
    p.paused_until = opt_time(res, i, 20);
    p.pause_reason = res.str(i, 21);
    p.breaker_state = res.str(i, 22);
    p.consecutive_failures = static_cast<int>(res.i64(i, 23));
    p.recent_calls = static_cast<int>(res.i64(i, 24));
    p.recent_failures = static_cast<int>(res.i64(i, 25));
    p.opened_at = opt_time(res, i, 26);
    p.events = parse_events(res.text(i, 27));
    out.push_back(std::move(p));
  }
  return out;
}

} // namespace spool::store
