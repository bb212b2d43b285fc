#pragma once
// The operator's endpoints of a worker (or of `spool exporter`):
//   /metrics  Prometheus text format: the worker's own metrics, and the
//             cluster's (from the database) where this process serves them;
//   /healthz  200 while the process and its actor system respond;
//   /readyz   200 while the database answers, its schema is the one this
//             binary expects and the worker is not draining; 503 otherwise.
// Each body says why. Database reads share one connection with short
// deadlines and are cached for about a second, so a scrape storm costs the
// database at most one round of queries a second.

#include "runtime/config/config.hpp"
#include "runtime/http/server.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace spool {
class worker_metrics;
}
namespace spool::pg {
class connection;
}

namespace spool::http {

struct monitoring_options {
  std::string database_url;
  /// Serve the cluster-wide metrics from the database.
  bool cluster_metrics = false;
  /// How long database answers are reused.
  std::chrono::milliseconds cache{1000};
  /// Deadline of connecting and of each database call.
  std::chrono::milliseconds db_timeout{2000};
  /// The worker's own metrics; null for an exporter.
  std::shared_ptr<worker_metrics> metrics;
  /// Empty when the process is healthy, else why not. Null: always healthy.
  std::function<std::string()> health;
  /// Whether the worker drains (then it is not ready). Null: never.
  std::function<bool()> draining;
  /// More metrics in the text format, appended to /metrics (the client
  /// API's). Null: none.
  std::function<std::string()> extra_metrics;
  /// The configuration in force (stage limits for stuck runs, the names of
  /// stages and providers).
  std::function<std::shared_ptr<const config::snapshot>()> config;
};

class monitoring {
public:
  explicit monitoring(monitoring_options opts);
  ~monitoring();

  /// Adds GET /metrics, /healthz and /readyz.
  void add_routes(router& r);

  response metrics();
  response healthz();
  response readyz();

private:
  /// Empty when the database answers and its schema is the one this binary
  /// expects, else the problem. Reused for opts_.cache.
  std::string database_problem();
  /// Runs `f` with the shared connection (made on demand); a failure drops
  /// the connection and rethrows.
  template <class F>
  auto with_db(F&& f);

  monitoring_options opts_;
  int64_t schema_version_ = 0; // the newest migration this binary has
  std::mutex db_mtx_;
  std::unique_ptr<pg::connection> conn_;
  std::chrono::steady_clock::time_point cluster_at_{};
  std::string cluster_text_;
  bool cluster_ok_ = true; // the last read worked (logs each change once)
  std::chrono::steady_clock::time_point ready_at_{};
  std::optional<std::string> db_problem_; // last readiness check ("" ok)
};

} // namespace spool::http
