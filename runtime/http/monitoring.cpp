#include "runtime/http/monitoring.hpp"

#include "runtime/metrics.hpp"
#include "runtime/migrations.hpp"
#include "runtime/pg/connection.hpp"
#include "runtime/store/cluster_metrics.hpp"
#include "runtime/worker_metrics.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace spool::http {

using steady = std::chrono::steady_clock;

monitoring::monitoring(monitoring_options opts) : opts_(std::move(opts)) {
  for (const auto& m : builtin_migrations())
    schema_version_ = std::max(schema_version_, m.version);
}

monitoring::~monitoring() = default;

void monitoring::add_routes(router& r) {
  r.on("GET", "/metrics", [this](const request&) { return metrics(); });
  r.on("GET", "/healthz", [this](const request&) { return healthz(); });
  r.on("GET", "/readyz", [this](const request&) { return readyz(); });
}

template <class F>
auto monitoring::with_db(F&& f) {
  if (!conn_) {
    pg::connection_options o;
    o.connect_timeout = std::max(std::chrono::seconds{2},
                                 std::chrono::duration_cast<std::chrono::seconds>(
                                   opts_.db_timeout));
    o.statement_timeout = opts_.db_timeout;
    o.call_timeout = opts_.db_timeout + std::chrono::milliseconds{500};
    o.tcp_user_timeout = opts_.db_timeout;
    conn_ = std::make_unique<pg::connection>(opts_.database_url, o);
  }
  try {
    return f(*conn_);
  } catch (...) {
    conn_.reset();
    throw;
  }
}

response monitoring::metrics() {
  if (opts_.metrics)
    database_problem(); // refreshes spool_database_up
  auto res = response::text(200, opts_.metrics ? opts_.metrics->render() : std::string{});
  res.content_type = "text/plain; version=0.0.4; charset=utf-8";
  if (opts_.extra_metrics)
    res.body += opts_.extra_metrics();
  if (!opts_.cluster_metrics)
    return res;
  std::lock_guard guard{db_mtx_};
  auto now = steady::now();
  if (cluster_text_.empty() || now - cluster_at_ >= opts_.cache) {
    auto started = steady::now();
    metrics::registry read;
    bool ok = false;
    try {
      auto cfg = opts_.config ? opts_.config() : nullptr;
      config::snapshot none;
      with_db([&](pg::connection& c) {
        store::collect_cluster_metrics(c, cfg ? *cfg : none, read);
        return 0;
      });
      ok = true;
      if (!std::exchange(cluster_ok_, true))
        spdlog::info("cluster metrics: reading the database works again");
    } catch (const std::exception& e) {
      if (std::exchange(cluster_ok_, false))
        spdlog::warn("cluster metrics: reading the database failed: {}", e.what());
    }
    // After a failure none of what was read is served: a partial picture
    // would read as zeros.
    metrics::registry failed;
    auto& reg = ok ? read : failed;
    reg.gauges("spool_cluster_metrics_up",
               "1 when the last read of the cluster's state from the database succeeded.")
      .with({})
      .set(ok ? 1 : 0);
    reg.gauges("spool_cluster_metrics_read_seconds",
               "Seconds the last read of the cluster's state took.")
      .with({})
      .set(std::chrono::duration<double>(steady::now() - started).count());
    cluster_text_ = reg.render();
    cluster_at_ = steady::now();
  }
  res.body += cluster_text_;
  return res;
}

response monitoring::healthz() {
  auto problem = opts_.health ? opts_.health() : std::string{};
  if (!problem.empty())
    return response::text(503, "unhealthy: " + problem + "\n");
  return response::text(200, "ok\n");
}

std::string monitoring::database_problem() {
  std::lock_guard guard{db_mtx_};
  auto now = steady::now();
  if (db_problem_ && now - ready_at_ < opts_.cache)
    return *db_problem_;
  bool reachable = false;
  try {
    auto version = with_db([](pg::connection& c) {
      return c
        .exec("SELECT coalesce(max(version), 0) FROM spool_schema_migrations", {},
              "reading the schema version")
        .i64(0, 0);
    });
    reachable = true;
    if (version < schema_version_)
      db_problem_ = "schema: the database is at migration " + std::to_string(version)
                    + ", this binary needs " + std::to_string(schema_version_)
                    + " (run `spool migrate up`)";
    else
      db_problem_ = "";
  } catch (const std::exception& e) {
    db_problem_ = std::string{"database unreachable: "} + e.what();
  }
  if (opts_.metrics)
    opts_.metrics->database_up(reachable);
  ready_at_ = steady::now();
  return *db_problem_;
}

response monitoring::readyz() {
  std::string problems;
  if (opts_.draining && opts_.draining())
    problems += "draining: the worker takes no new work\n";
  if (auto db = database_problem(); !db.empty())
    problems += db + "\n";
  if (!problems.empty())
    return response::text(503, "not ready:\n" + problems);
  return response::text(200, "ready: database reachable, schema at migration "
                               + std::to_string(schema_version_) + ", not draining\n");
}

} // namespace spool::http
