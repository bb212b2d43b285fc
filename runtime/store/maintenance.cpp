#include "runtime/store/maintenance.hpp"

#include "runtime/pg/connection.hpp"

namespace spool::store {

sweep_report sweep_stuck(pg::connection& conn, const std::vector<stage_limit>& limits,
                         double margin_s, double stale_after_s) {
  std::vector<std::string> stages, per;
  std::vector<double> timeouts;
  for (auto& l : limits) {
    stages.push_back(l.stage);
    timeouts.push_back(l.timeout_s);
    per.push_back(l.timeout_per);
  }
  sweep_report out;
  auto stuck = conn.exec(
    "WITH limits AS (SELECT * FROM unnest($1::text[], $2::float8[], $3::text[]) "
    "                AS l(stage, timeout_s, per_field)) "
    "UPDATE stage_runs r SET lease_expires_at = now(), "
    "  error_message = 'stuck: running past its timeout' "
    "FROM limits l, tasks t "
    "WHERE r.state = 'running' AND r.stage = l.stage AND t.id = r.task_id "
    "  AND r.lease_expires_at > now() "
    "  AND r.claimed_at < now() - make_interval(secs => $4 + l.timeout_s * greatest(1, "
    "      CASE WHEN l.per_field <> '' AND jsonb_typeof(t.payload -> l.per_field) = 'number' "
    "           THEN (t.payload ->> l.per_field)::float8 ELSE 1 END)) "
    "RETURNING r.id",
    {pg::array_literal(stages), pg::array_literal(timeouts), pg::array_literal(per),
     pg::to_param(margin_s)},
    "sweeping stuck runs");
  out.stuck = stuck.rows();
  auto stale = conn.exec(
    "SELECT (SELECT count(*) FROM stage_runs WHERE state = 'ready' "
    "          AND ready_at < now() - make_interval(secs => $1)) "
    "     + (SELECT count(*) FROM stage_runs WHERE state = 'scheduled' "
    "          AND ready_at < now() - make_interval(secs => $1))",
    {pg::to_param(stale_after_s)}, "counting stale runs");
  out.stale_ready = static_cast<int>(stale.i64(0, 0));
  return out;
}

} // namespace spool::store
