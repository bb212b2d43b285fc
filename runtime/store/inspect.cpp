#include "runtime/store/inspect.hpp"

#include "runtime/pg/connection.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <string>

namespace spool::store {

namespace json = boost::json;

namespace {

/// The rows of `res` as JSON objects, typed by each column's SQL type.
json::array rows_json(const pg::result& res) {
  json::array out;
  for (int i = 0; i < res.rows(); ++i) {
    json::object row;
    for (int c = 0; c < res.columns(); ++c) {
      auto& slot = row[res.column_name(c)];
      if (res.is_null(i, c))
        continue; // stays null
      switch (res.type_oid(c)) {
        case 16: // bool
          slot = res.boolean(i, c);
          break;
        case 20: // int8
        case 21: // int2
        case 23: // int4
          slot = res.i64(i, c);
          break;
        case 700: // float4
        case 701: // float8
        case 1700: // numeric
          slot = res.f64(i, c);
          break;
        case 114: // json
        case 3802: // jsonb
          slot = json::parse(res.text(i, c));
          break;
        default:
          slot = json::string(res.text(i, c));
      }
    }
    out.push_back(std::move(row));
  }
  return out;
}

template <class T>
json::value nullable(const std::optional<T>& x) {
  return x ? json::value(*x) : json::value(nullptr);
}

} // namespace

json::value queue_status(pg::connection& conn) {
  json::object out;
  json::object stages;
  auto runs = conn.exec("SELECT stage, state::text, count(*) FROM stage_runs GROUP BY 1, 2 "
                        "ORDER BY 1, 2",
                        {}, "counting stage runs");
  for (int i = 0; i < runs.rows(); ++i) {
    auto& per_state = stages[runs.str(i, 0)];
    if (!per_state.is_object())
      per_state.emplace_object();
    per_state.as_object()[runs.str(i, 1)] = runs.i64(i, 2);
  }
  out["stages"] = std::move(stages);

  json::object tasks;
  auto ts = conn.exec("SELECT state::text, count(*) FROM tasks GROUP BY 1 ORDER BY 1", {},
                      "counting tasks");
  for (int i = 0; i < ts.rows(); ++i)
    tasks[ts.str(i, 0)] = ts.i64(i, 1);
  out["tasks"] = std::move(tasks);

  // Today's money: spend and reservations against the budgets, and the
  // tasks whose actual cost passed the overrun line today.
  auto money = conn.exec(
    "SELECT to_char(d.day_start AT TIME ZONE b.time_zone, 'YYYY-MM-DD'), "
    "coalesce(s.spent, 0)::float8, coalesce(s.reserved, 0)::float8, b.soft_usd::float8, "
    "b.hard_usd::float8, "
    "(SELECT count(*) FROM tasks t WHERE t.overrun_at >= d.day_start), "
    "b.waiting_stages <> '{}' "
    "FROM spool_budgets b CROSS JOIN spool_budget_day(now()) d "
    "LEFT JOIN spool_money s ON s.day = d.day_start AND s.scope = 'total' "
    "WHERE b.scope = 'total'",
    {}, "reading today's spend");
  if (money.rows() > 0) {
    auto opt = [&](int col) {
      return money.is_null(0, col) ? json::value(nullptr) : json::value(money.f64(0, col));
    };
    out["cost"] = json::object{{"day", money.str(0, 0)},      {"spent", money.f64(0, 1)},
                               {"reserved", money.f64(0, 2)}, {"soft_usd", opt(3)},
                               {"hard_usd", opt(4)},          {"overruns", money.i64(0, 5)},
                               {"held_back", money.boolean(0, 6)}};
  }

  json::array channels;
  auto ch = conn.exec("SELECT channel_id, count(*) FROM stage_runs WHERE state = 'ready' "
                      "GROUP BY 1 ORDER BY 2 DESC, 1",
                      {}, "measuring channel depth");
  for (int i = 0; i < ch.rows(); ++i)
    channels.push_back(json::object{{"channel_id", ch.str(i, 0)}, {"ready", ch.i64(i, 1)}});
  out["channels"] = std::move(channels);

  // A worker is live while it is not stopped and its last heartbeat is
  // within its lease; otherwise its leases may already have been rescued.
  json::array workers;
  std::set<std::string> served; // stages some live worker serves
  bool serves_all = false;      // a live worker that did not say (no stages)
  struct config_use {
    int64_t workers = 0;
    double applied = 0; // the latest config_applied_at (epoch seconds)
  };
  std::map<std::string, config_use> configs; // of live workers, by checksum
  auto ws = conn.exec(
    "SELECT id, host, pid, config_version, "
    "to_char(last_heartbeat AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "extract(epoch FROM now() - last_heartbeat)::float8, stopped_at IS NOT NULL, "
    "(SELECT count(*) FROM stage_runs r WHERE r.state = 'running' AND r.lease_owner = w.id), "
    "CASE WHEN stopped_at IS NOT NULL THEN 'stopped' "
    "  WHEN last_heartbeat > now() - lease_ms * interval '1 millisecond' THEN 'live' "
    "  ELSE 'stale' END, "
    "array_to_json(stages)::text, lease_ms, config_stored_version, "
    "to_char(config_applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "array_to_json(config_restart_pending)::text, "
    "extract(epoch FROM config_applied_at)::float8, http_address "
    "FROM workers w "
    "ORDER BY stopped_at IS NOT NULL, "
    "  last_heartbeat <= now() - lease_ms * interval '1 millisecond', "
    "  last_heartbeat DESC LIMIT 100",
    {}, "listing workers");
  for (int i = 0; i < ws.rows(); ++i) {
    auto state = ws.str(i, 8);
    auto stages = json::parse(ws.text(i, 9));
    if (state == "live") {
      serves_all = serves_all || stages.as_array().empty();
      for (auto& st : stages.as_array())
        served.insert(std::string{st.as_string()});
    }
    workers.push_back(json::object{{"id", ws.str(i, 0)},
                                   {"host", ws.str(i, 1)},
                                   {"pid", ws.i64(i, 2)},
                                   {"config_version", ws.opt_str(i, 3).value_or("")},
                                   {"last_heartbeat", ws.str(i, 4)},
                                   {"heartbeat_age_s", ws.f64(i, 5)},
                                   {"stopped", ws.boolean(i, 6)},
                                   {"running", ws.i64(i, 7)},
                                   {"state", state},
                                   {"stale", state == "stale"},
                                   {"stages", std::move(stages)},
                                   {"lease_ms", ws.i64(i, 10)},
                                   {"config_stored_version", nullable(ws.opt_i64(i, 11))},
                                   {"config_applied_at", nullable(ws.opt_str(i, 12))},
                                   {"config_restart_pending", json::parse(ws.text(i, 13))},
                                   {"config_differs", false},
                                   {"http_address", nullable(ws.opt_str(i, 15))}});
    if (auto checksum = ws.opt_str(i, 3).value_or(""); state == "live" && !checksum.empty()) {
      auto& c = configs[checksum];
      ++c.workers;
      c.applied = std::max(c.applied, ws.opt_f64(i, 14).value_or(0));
    }
  }
  // Live workers that run different configurations: the one most run (the
  // most recently applied among equals) is the reference; the others are
  // flagged. One configuration, or none known: nothing is flagged.
  json::array configurations;
  if (!configs.empty()) {
    auto ref = configs.begin();
    for (auto it = configs.begin(); it != configs.end(); ++it)
      if (it->second.workers > ref->second.workers
          || (it->second.workers == ref->second.workers
              && it->second.applied > ref->second.applied))
        ref = it;
    for (auto& [checksum, c] : configs)
      configurations.push_back(json::object{{"checksum", checksum},
                                            {"workers", c.workers},
                                            {"reference", checksum == ref->first}});
    if (configs.size() > 1)
      for (auto& wv : workers) {
        auto& w = wv.as_object();
        auto& checksum = w.at("config_version").as_string();
        w["config_differs"] =
          w.at("state") == "live" && !checksum.empty() && checksum != ref->first;
      }
  }
  out["configurations"] = std::move(configurations);
  // Workers beyond the 100 listed still count as serving their stages.
  if (ws.rows() == 100 && !serves_all) {
    auto more = conn.exec(
      "SELECT DISTINCT unnest(CASE WHEN cardinality(stages) = 0 THEN ARRAY['*'] "
      "  ELSE stages END) FROM workers "
      "WHERE stopped_at IS NULL AND last_heartbeat > now() - lease_ms * interval '1 millisecond'",
      {}, "listing served stages");
    for (int i = 0; i < more.rows(); ++i) {
      serves_all = serves_all || more.text(i, 0) == "*";
      served.insert(more.str(i, 0));
    }
  }

  // Ready runs no live worker will claim: a stage nobody runs, or every
  // worker of it gone.
  json::array unserved;
  if (!serves_all) {
    for (auto& [stage, counts] : out["stages"].as_object()) {
      auto* ready = counts.as_object().if_contains("ready");
      if (ready == nullptr || ready->as_int64() == 0 || served.count(std::string{stage}))
        continue;
      unserved.push_back(json::object{{"stage", stage}, {"ready", ready->as_int64()}});
    }
  }
  out["unserved"] = std::move(unserved);
  out["workers"] = std::move(workers);
  return out;
}

std::optional<json::value> task_detail(pg::connection& conn, int64_t task_id) {
  auto task = conn.query(
    "SELECT id, client_id, campaign_id, channel_id, priority::text AS priority, "
    "state::text AS state, "
    "payload, storyboard_data, video_url, "
    "approved, estimated_cost::float8 AS estimated_cost, actual_cost::float8 AS actual_cost, retry_count, error_message, "
    "idempotency_key, overrun_at, reviewed_at, reviewed_by, review_note, created_at, "
    "updated_at, finished_at FROM tasks WHERE id = $1",
    task_id);
  if (task.rows() == 0)
    return std::nullopt;
  auto out = rows_json(task).at(0).as_object();
  auto runs = conn.query(
    "SELECT id, stage, state::text AS state, attempt, failed_attempts, max_retries, "
    "lost_attempts, max_lost, snoozed_ms, optional, needs_approval, "
    "array_to_json(depends_on) AS depends_on, deps_pending, ready_at, lease_owner, lease_expires_at, claimed_at, "
    "output, error_class, error_message, cost::float8 AS cost, est_cost::float8 AS est_cost, "
    "finished_at, provider "
    "FROM stage_runs WHERE task_id = $1 ORDER BY id",
    task_id);
  out["stage_runs"] = rows_json(runs);
  auto attempts = conn.query(
    "SELECT a.stage, a.attempt, a.worker_id, a.provider, a.started_at, a.finished_at, "
    "a.outcome, a.error_class, a.error_message, a.cost::float8 AS cost, "
    "extract(epoch FROM coalesce(a.finished_at, now()) - a.started_at)::float8 AS seconds "
    "FROM stage_attempts a JOIN stage_runs r ON r.id = a.stage_run_id "
    "WHERE r.task_id = $1 ORDER BY a.started_at, a.id",
    task_id);
  out["attempts"] = rows_json(attempts);
  return json::value(std::move(out));
}

} // namespace spool::store
