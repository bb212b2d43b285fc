#include "runtime/store/maintenance.hpp"

#include "runtime/pg/connection.hpp"

namespace spool::store {

namespace {

/// The stage limits as bound parameters $1..$5 and the margin as $6.
pg::params stuck_params(const std::vector<stage_limit>& limits, double margin_s) {
  std::vector<std::string> stages, per;
  std::vector<double> timeouts, caps, backoffs;
  for (auto& l : limits) {
    stages.push_back(l.stage);
    timeouts.push_back(l.timeout_s);
    per.push_back(l.timeout_per);
    caps.push_back(l.timeout_max_s);
    backoffs.push_back(l.retry_base_s);
  }
  return {pg::array_literal(stages), pg::array_literal(timeouts), pg::array_literal(per),
          pg::array_literal(caps), pg::array_literal(backoffs), pg::to_param(margin_s)};
}

/// CTE `limits` from stuck_params, and the start of the CTE `stuck`: the
/// running runs past their effective timeout plus the margin, with their
/// owner, fence and backoff (`ORDER BY`/`LIMIT`/locking follow).
constexpr const char* stuck_runs_sql =
  "WITH limits AS (SELECT * FROM unnest($1::text[], $2::float8[], $3::text[], "
  "                $4::float8[], $5::float8[]) AS l(stage, timeout_s, per_field, cap_s, "
  "                base_s)), "
  "stuck AS (SELECT r.id, r.lease_owner, r.attempt, r.lease_token, l.base_s, "
  "            extract(epoch FROM now() - r.claimed_at)::bigint AS ran_s "
  "  FROM stage_runs r JOIN limits l ON r.stage = l.stage JOIN tasks t ON t.id = r.task_id "
  "  WHERE r.state = 'running' "
  "    AND r.claimed_at < now() - make_interval(secs => $6 + least("
  "      CASE WHEN l.cap_s > 0 THEN l.cap_s ELSE 'infinity'::float8 END, "
  "      l.timeout_s * greatest(1, CASE WHEN l.per_field <> '' "
  "        AND jsonb_typeof(t.payload -> l.per_field) = 'number' "
  "        THEN (t.payload ->> l.per_field)::float8 ELSE 1 END))) ";

} // namespace

int64_t count_stuck(pg::connection& conn, const std::vector<stage_limit>& limits,
                    double margin_s) {
  return conn
    .exec(std::string{stuck_runs_sql} + ") SELECT count(*) FROM stuck",
          stuck_params(limits, margin_s), "counting stuck runs")
    .i64(0, 0);
}

sweep_report sweep_stuck(pg::connection& conn, const std::vector<stage_limit>& limits,
                         double margin_s, double stale_after_s) {
  sweep_report out;
  // One statement: find, lock (skipping runs an outcome is being written
  // for) and record each stuck run as a timed-out attempt of its owner.
  auto stuck = conn.exec(
    std::string{stuck_runs_sql}
      + "  ORDER BY r.id LIMIT 1000 FOR UPDATE OF r SKIP LOCKED), "
    "batch AS (SELECT array_agg(s.lease_owner) AS workers, array_agg(s.id) AS runs, "
    "            array_agg(s.attempt) AS attempts, array_agg(s.lease_token) AS tokens, "
    "            array_agg('retry'::text) AS kinds, "
    "            array_agg((s.base_s * 1000)::bigint) AS delays, "
    "            array_agg(NULL::jsonb) AS outputs, array_agg(0::numeric) AS costs, "
    "            array_agg('timeout'::text) AS classes, "
    "            array_agg('stuck: ran ' || s.ran_s || ' s, past its timeout; rescued by "
    "the stuck-job sweep'::text) AS messages "
    "  FROM stuck s) "
    "SELECT count(*) FILTER (WHERE o.accepted) FROM batch b, "
    "  LATERAL spool_record_outcomes(b.workers, b.runs, b.attempts, b.tokens, b.kinds, "
    "    b.delays, b.outputs, b.costs, b.classes, b.messages) o "
    "WHERE b.runs IS NOT NULL",
    stuck_params(limits, margin_s), "sweeping stuck runs");
  out.stuck = stuck.rows() > 0 ? static_cast<int>(stuck.i64(0, 0)) : 0;
  auto stale = conn.exec(
    "SELECT (SELECT count(*) FROM stage_runs WHERE state = 'ready' "
    "          AND ready_at < now() - make_interval(secs => $1)) "
    "     + (SELECT count(*) FROM stage_runs WHERE state = 'scheduled' "
    "          AND ready_at < now() - make_interval(secs => $1)), "
    "       (SELECT count(*) FROM tasks WHERE state = 'awaiting_approval' "
    "          AND updated_at < now() - make_interval(secs => $1))",
    {pg::to_param(stale_after_s)}, "counting stale work");
  out.stale_ready = static_cast<int>(stale.i64(0, 0));
  out.stale_approval = static_cast<int>(stale.i64(0, 1));
  return out;
}

} // namespace spool::store
