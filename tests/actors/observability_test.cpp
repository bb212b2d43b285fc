// What an operator watches, against real workers: /metrics checked by
// promtool and scraped by a real Prometheus (Debian's prometheus package)
// whose query API must report the work the test did; /healthz and /readyz
// through a database stop and a drain; JSON log events that parse and carry
// their fields.

#include "tests/support/pg_cluster.hpp"
#include "tests/support/tools.hpp"
#include "tests/support/worker_fixture.hpp"

#include <boost/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace spool;
using namespace spool::test;
namespace fs = std::filesystem;

namespace {

/// The port a worker registered in workers.http_address (waits for it).
int worker_port(pg::connection& conn, double timeout_s = 30) {
  std::string address;
  eventually(
    [&] {
      auto r = conn.exec("SELECT http_address FROM workers WHERE http_address IS NOT NULL "
                         "AND stopped_at IS NULL ORDER BY started_at DESC LIMIT 1");
      if (r.rows() == 0)
        return false;
      address = r.str(0, 0);
      return true;
    },
    timeout_s);
  REQUIRE_FALSE(address.empty());
  return std::stoi(address.substr(address.rfind(':') + 1));
}

/// The configuration checksum the newest worker registered.
std::string text_of_worker_version(pg::connection& conn) {
  return conn.exec("SELECT config_version FROM workers ORDER BY started_at DESC LIMIT 1")
    .str(0, 0);
}

/// The value of one series ("name{labels}" exactly as rendered) in an
/// exposition; NaN when absent.
double sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0
        && line[series.size()] == ' ')
      return std::stod(line.substr(series.size() + 1));
  return std::nan("");
}

/// Lines of `promtool check metrics` that are not the two lint findings the
/// seed's metric names carry (they are the PRD's names, kept as they are).
std::string unexpected_lint(const std::string& out) {
  std::string rest;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line == "cost_actual_dollars counter metrics should have \"_total\" suffix"
        || line == "job_status_gauge metric name should not include type 'gauge'")
      continue;
    rest += line + "\n";
  }
  return rest;
}

/// A loopback port nobody listens on now.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string url_encode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

/// The value of an instant query's single sample; NaN when the answer has
/// none (yet).
double prometheus_value(int port, const std::string& query) {
  auto r = http_get(port, "/api/v1/query?query=" + url_encode(query), 5);
  if (r.status != 200)
    return std::nan("");
  boost::json::error_code ec;
  auto doc = boost::json::parse(r.body, ec);
  if (ec)
    return std::nan("");
  auto& result = doc.at("data").at("result").as_array();
  if (result.size() != 1)
    return std::nan("");
  return std::stod(std::string{result[0].at("value").as_array()[1].as_string()});
}

std::string observed_config(int tasks_latency_ms = 20) {
  return R"({"worker": {"idle_poll_s": 0.2, "heartbeat_interval_s": 0.3,
    "rescue_interval_s": 0.3, "shutdown_grace_s": 10, "lease_s": 3},
    "budgets": {"soft_usd": 0, "hard_usd": 0},
    "http": {"listen": "127.0.0.1:0", "cluster_metrics": true},
    "providers": [{"name": "kling", "max_concurrent": 3}],
    "stages": [{"name": "video_gen", "provider": "kling", "max_concurrent": 4,
      "price": {"per_call": 0.25},
      "executor": {"latency": {"dist": "fixed", "ms": )"
         + std::to_string(tasks_latency_ms) + R"(}, "cost": 0.25}}]})";
}

} // namespace

TEST_CASE_METHOD(worker_fixture,
                 "a live worker's /metrics passes promtool and counts known work, and a real "
                 "Prometheus scraping it answers queries with the same numbers",
                 "[db][worker][metrics]") {
  auto cfg = temp_file(observed_config());
  enqueue(cfg, 12);
  // --http wins over SPOOL_HTTP, which the test harness sets for every worker.
  spool_process w{{"run", "--config", cfg, "--http", "127.0.0.1:0"}, env};
  REQUIRE(wait_for("SELECT count(*) FROM tasks WHERE state = 'completed'", 12, 60));
  int port = worker_port(conn);

  std::string text;
  REQUIRE(eventually([&] {
    auto r = http_get(port, "/metrics");
    text = r.body;
    // The outcome counters move before the recording commits: wait for both.
    return r.status == 200 && sample(text, "job_status_gauge{state=\"completed\"}") == 12;
  }));
  auto lint = promtool_check_metrics(text);
  INFO(lint.out);
  CHECK((lint.exit_code == 0 || lint.exit_code == 3)); // 1: it did not parse
  CHECK(unexpected_lint(lint.out).empty());

  // The worker's own counts.
  CHECK(sample(text, "spool_outcomes_total{stage=\"video_gen\",kind=\"ok\"}") == 12);
  CHECK(sample(text, "spool_claimed_total{stage=\"video_gen\"}") == 12);
  CHECK(sample(text, "video_gen_duration_seconds_count") == 12);
  CHECK(sample(text, "spool_stage_duration_seconds_count{stage=\"video_gen\"}") == 12);
  CHECK(sample(text, "spool_provider_calls_total{provider=\"kling\"}") == 12);
  CHECK(sample(text, "cost_actual_dollars{stage=\"video_gen\",provider=\"kling\"}")
        == Approx(3.0));
  CHECK(sample(text, "replicate_api_errors_total{provider=\"kling\"}") == 0);
  CHECK(sample(text, "spool_in_flight{stage=\"video_gen\"}") == 0);
  CHECK(sample(text, "spool_pool_size{stage=\"video_gen\"}") == 4);
  CHECK(sample(text, "spool_worker_draining") == 0);
  CHECK(sample(text, "spool_database_up") == 1);
  auto version = text_of_worker_version(conn);
  CHECK(sample(text, "spool_config_info{version=\"" + version + "\",stored_version=\"\"}") == 1);
  // The cluster's, from the database.
  CHECK(sample(text, "job_status_gauge{state=\"queued\"}") == 0);
  CHECK(sample(text, "spool_runs{stage=\"video_gen\",state=\"done\"}") == 12);
  CHECK(sample(text, "spool_runs{stage=\"video_gen\",state=\"ready\"}") == 0);
  CHECK(sample(text, "spool_provider_slots_limit{provider=\"kling\"}") == 3);
  CHECK(sample(text, "spool_provider_slots_in_use{provider=\"kling\"}") == 0);
  CHECK(sample(text, "spool_provider_breaker_state{provider=\"kling\",state=\"closed\"}") == 1);
  CHECK(sample(text, "spool_budget_spent_dollars{scope=\"cluster\"}") == Approx(3.0));
  CHECK(sample(text, "spool_workers{config_version=\"" + version + "\"}") == 1);
  CHECK(sample(text, "spool_cluster_metrics_up") == 1);

  auto health = http_get(port, "/healthz");
  CHECK(health.status == 200);
  auto ready = http_get(port, "/readyz");
  CHECK(ready.status == 200);
  CHECK_THAT(ready.body, Catch::StartsWith("ready"));
  CHECK(http_get(port, "/nothing").status == 404);
  CHECK(http_request(port, "POST", "/metrics").status == 405);

  // A real Prometheus scrapes it every second.
  int prom_port = free_port();
  fs::path dir = fs::path(temp_file("", ".d"));
  fs::remove(dir);
  fs::create_directories(dir / "data");
  {
    std::ofstream out(dir / "prometheus.yml");
    out << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
           "scrape_configs:\n  - job_name: spool\n    static_configs:\n"
           "      - targets: ['127.0.0.1:"
        << port << "']\n";
  }
  spool_process prom{spool_process::other_program{},
                     {"prometheus", "--config.file=" + (dir / "prometheus.yml").string(),
                      "--storage.tsdb.path=" + (dir / "data").string(),
                      "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)}};
  double completed = std::nan("");
  bool seen = eventually(
    [&] {
      completed = prometheus_value(prom_port, "job_status_gauge{job=\"spool\",state=\"completed\"}");
      return completed == 12;
    },
    60, std::chrono::milliseconds{250});
  INFO(prom.output());
  CHECK(seen);
  CHECK(prometheus_value(prom_port, "sum(spool_outcomes_total{kind=\"ok\"})") == 12);
  CHECK(prometheus_value(prom_port, "video_gen_duration_seconds_count") == 12);
  CHECK(prometheus_value(prom_port, "sum(cost_actual_dollars)") == Approx(3.0));
  CHECK(prometheus_value(prom_port, "up{job=\"spool\"}") == 1);
  prom.signal(SIGTERM);
  CHECK(prom.wait(30) == 0);
  fs::remove_all(dir);

  w.signal(SIGTERM);
  CHECK(w.wait(30) == 0);
}

TEST_CASE("/readyz turns unready while the database is stopped and while the worker drains; "
          "/healthz stays healthy",
          "[db][worker][metrics]") {
  pg_cluster cluster;
  std::map<std::string, std::string> env{{"SPOOL_DATABASE_URL", cluster.url()}};
  {
    auto res = run_spool({"migrate", "up"}, env);
    INFO(res.out << res.err);
    REQUIRE(res.exit_code == 0);
  }
  auto cfg = temp_file(observed_config(4000));
  spool_process w{{"run", "--config", cfg, "--http", "127.0.0.1:0"}, env};
  int port = 0;
  {
    pg::connection conn{cluster.url()};
    port = worker_port(conn);
  }
  CHECK(eventually([&] { return http_get(port, "/readyz").status == 200; }));

  cluster.stop();
  http_reply r;
  CHECK(eventually(
    [&] {
      r = http_get(port, "/readyz");
      return r.status == 503;
    },
    30, std::chrono::milliseconds{200}));
  CHECK_THAT(r.body, Catch::Contains("database unreachable"));
  CHECK(http_get(port, "/healthz").status == 200); // the process itself is fine
  auto m = http_get(port, "/metrics");
  CHECK(m.status == 200);
  CHECK(sample(m.body, "spool_database_up") == 0);
  CHECK(sample(m.body, "spool_cluster_metrics_up") == 0);
  CHECK(std::isnan(sample(m.body, "job_status_gauge{state=\"queued\"}"))); // nothing stale

  cluster.start();
  CHECK(eventually([&] { return http_get(port, "/readyz").status == 200; }, 60,
                   std::chrono::milliseconds{200}));

  // A job that runs 4 s: the drain waits for it, and the worker says it is
  // not ready meanwhile.
  {
    auto res = run_spool({"enqueue", "--config", cfg, "--channel", "ch0"}, env);
    INFO(res.out << res.err);
    REQUIRE(res.exit_code == 0);
  }
  pg::connection conn{cluster.url()};
  REQUIRE(eventually(
    [&] { return conn.exec("SELECT count(*) FROM stage_runs WHERE state = 'running'").i64(0, 0) == 1; },
    30));
  w.signal(SIGTERM);
  CHECK(eventually(
    [&] {
      r = http_get(port, "/readyz");
      return r.status == 503;
    },
    10));
  CHECK_THAT(r.body, Catch::Contains("draining"));
  CHECK(sample(http_get(port, "/metrics").body, "spool_worker_draining") == 1);
  CHECK(w.wait(60) == 0);
  CHECK(conn.exec("SELECT count(*) FROM tasks WHERE state = 'completed'").i64(0, 0) == 1);
}

TEST_CASE_METHOD(worker_fixture,
                 "with --log-format json every line is one JSON object, and the events carry "
                 "their fields",
                 "[db][worker][logging]") {
  auto cfg = worker_config(R"(
    {"name": "a", "max_concurrent": 2, "retry": {"max_retries": 1, "base_s": 0.05,
      "factor": 1, "jitter": 0},
     "executor": {"latency": {"dist": "fixed", "ms": 5}, "errors": {"transient": 1}}},
    {"name": "b", "after": ["a"], "max_concurrent": 2,
     "executor": {"latency": {"dist": "fixed", "ms": 5}}})");
  enqueue(cfg, 2);
  // Task 1 only: stage a always fails, so each run is retried once and fails.
  // A second pipeline whose stages succeed gives `completed`.
  auto ok_cfg = worker_config(R"(
    {"name": "c", "max_concurrent": 2, "executor": {"latency": {"dist": "fixed", "ms": 5}}})");
  enqueue(ok_cfg, 2);
  {
    spool_process w{{"--log-format", "json", "--log-level", "debug", "run", "--config", cfg,
                     "--exit-when-idle"},
                    env};
    REQUIRE(w.wait(60) == 0);
    spool_process w2{{"--log-format", "json", "--log-level", "debug", "run", "--config", ok_cfg,
                      "--exit-when-idle"},
                     env};
    REQUIRE(w2.wait(60) == 0);
    auto out = w.output() + w2.output();
    std::map<std::string, std::vector<boost::json::object>> events;
    std::istringstream in(out);
    std::string line;
    int lines = 0;
    while (std::getline(in, line)) {
      if (line.empty())
        continue;
      ++lines;
      boost::json::error_code ec;
      auto v = boost::json::parse(line, ec);
      INFO(line);
      REQUIRE(!ec);
      REQUIRE(v.is_object());
      auto& o = v.as_object();
      CHECK(o.contains("time"));
      CHECK(o.contains("level"));
      CHECK(o.contains("msg"));
      if (auto* e = o.if_contains("event"))
        events[std::string{e->as_string()}].push_back(o);
    }
    CHECK(lines > 5);
    REQUIRE(events["claimed"].size() >= 4);
    REQUIRE(events["retry_scheduled"].size() == 2);
    REQUIRE(events["failed"].size() == 2);
    REQUIRE(events["completed"].size() == 2);
    for (const char* name : {"claimed", "retry_scheduled", "failed", "completed"})
      for (auto& e : events[name]) {
        INFO(name << ": " << boost::json::serialize(e));
        CHECK(e.at("task_id").is_int64());
        CHECK(e.at("run_id").is_int64());
        CHECK(e.at("attempt").is_int64());
        CHECK(e.at("stage").is_string());
        CHECK(e.at("provider").is_string());
        CHECK_FALSE(e.at("worker").as_string().empty());
      }
    for (auto& e : events["retry_scheduled"]) {
      CHECK(e.at("stage").as_string() == "a");
      CHECK(e.at("error_class").as_string() == "transient");
      CHECK(e.at("retry_in_s").as_double() == Approx(0.05));
    }
    for (auto& e : events["completed"]) {
      CHECK(e.at("stage").as_string() == "c");
      CHECK(e.at("duration_s").as_double() >= 0.005);
      CHECK(e.at("cost").is_number());
    }
  }
}
