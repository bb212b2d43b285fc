// reload_latency: how fast a configuration pushed with `spool config push`
// is applied by 3 running workers (`spool run --config db`), and what
// pushing every second costs the throughput.
//
// Latency: 100 pushes, each changing a live setting (the stage's timeout);
// each worker records when it applied the version (workers.config_applied_at,
// its own clock; same machine). Reported per worker and push (300 values):
//   - from the push's commit (pushed_at, the database's clock: the inserting
//     transaction's start) to the worker's application: the NOTIFY, the
//     fetch of the stored version, validation, the diff and the messages to
//     every actor;
//   - from the start of the `spool config push` process (the bench's clock)
//     to the application: the above plus the CLI's own start, connection and
//     validation.
// Excluded: the write of config_applied_at itself (after the timestamp).
// Goal: p99 <= 100 ms on a 2-core machine.
//
// Throughput: 3 workers, 10 stage actors each, 90,000 single-stage jobs
// (simulate 0 ms) enqueued first; jobs/s from the first attempt's start to
// the last one's end, once without pushes and once with a push every second
// (same workload, fresh database each). Goal: ratio >= 0.95.
//
//   ./dev.sh bench reload_latency [pushes] [jobs]

#include "bench/bench_support.hpp"
#include "runtime/config/config.hpp"
#include "tests/support/test_db.hpp"

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <thread>

using namespace spool;
using namespace std::chrono_literals;

namespace {

constexpr int workers = 3;

std::string config_json(double timeout_s, int max_concurrent) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", timeout_s);
  return "{" + bench::bench_worker_json() + R"(, "stages": [{"name": "noop", "max_concurrent": )"
         + std::to_string(max_concurrent) + R"(, "timeout_s": )" + buf
         + R"(, "executor": {"latency": {"dist": "fixed", "ms": 0}}}]})";
}

double now_epoch_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Stores `json` as a new version through the CLI; returns its number.
int64_t push(const std::string& url, const std::string& json) {
  auto file = test::temp_file(json);
  auto res = test::run_spool({"--log-level", "warn", "config", "push", file},
                             {{"SPOOL_DATABASE_URL", url}});
  std::remove(file.c_str());
  if (res.exit_code != 0) {
    bench::error("spool config push exited %d: %s%s", res.exit_code, res.out.c_str(),
                 res.err.c_str());
    return -1;
  }
  return 0;
}

std::vector<std::unique_ptr<test::spool_process>> start_workers(const std::string& url,
                                                                bool exit_when_idle) {
  std::vector<std::unique_ptr<test::spool_process>> ws;
  std::vector<std::string> args{"--log-level", "warn", "run", "--config", "db"};
  if (exit_when_idle)
    args.push_back("--exit-when-idle");
  for (int i = 0; i < workers; ++i)
    ws.push_back(std::make_unique<test::spool_process>(args,
                                                       std::map<std::string, std::string>{
                                                         {"SPOOL_DATABASE_URL", url}}));
  return ws;
}

bool wait_applied(pg::connection& conn, int64_t version, double timeout_s) {
  auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < until) {
    if (conn.query("SELECT count(*) FROM workers WHERE stopped_at IS NULL "
                   "AND config_stored_version = $1",
                   version)
          .i64(0, 0)
        >= workers)
      return true;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

void latency(int pushes) {
  test::fresh_database db;
  pg::connection conn{db.url()};
  push(db.url(), config_json(60, 4));
  auto ws = start_workers(db.url(), false);
  if (!wait_applied(conn, 1, 60)) {
    bench::error("the workers did not start on stored version 1");
    return;
  }
  std::vector<double> from_commit, from_cli;
  for (int i = 0; i < pushes; ++i) {
    auto version = static_cast<int64_t>(i + 2);
    auto started = now_epoch_s();
    push(db.url(), config_json(60 + 0.001 * (i + 1), 4));
    if (!wait_applied(conn, version, 30)) {
      bench::error("push %lld was not applied by every worker within 30 s",
                   static_cast<long long>(version));
      return;
    }
    auto r = conn.query("SELECT extract(epoch FROM w.config_applied_at - v.pushed_at)::float8, "
                        "extract(epoch FROM w.config_applied_at)::float8 "
                        "FROM workers w JOIN spool_config_versions v "
                        "ON v.version = w.config_stored_version WHERE v.version = $1",
                        version);
    for (int row = 0; row < r.rows(); ++row) {
      from_commit.push_back(r.f64(row, 0) * 1000);
      from_cli.push_back((r.f64(row, 1) - started) * 1000);
    }
    std::this_thread::sleep_for(20ms); // pushes do not queue up behind each other
  }
  std::printf("  push -> applied on %d workers, %d pushes (%zu values):\n", workers, pushes,
              from_commit.size());
  std::printf("    from the push's commit:        p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms\n",
              bench::percentile(from_commit, 0.5), bench::percentile(from_commit, 0.99),
              bench::percentile(from_commit, 1.0));
  std::printf("    from `spool config push` start: p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms\n",
              bench::percentile(from_cli, 0.5), bench::percentile(from_cli, 0.99),
              bench::percentile(from_cli, 1.0));
  for (auto& w : ws)
    w->signal(SIGTERM);
  for (auto& w : ws)
    if (w->wait(60) != 0)
      bench::error("a worker did not drain cleanly:\n%s", w->output().c_str());
}

/// Jobs/s from the first attempt's start to the last one's end.
double throughput(int jobs, bool pushing) {
  test::fresh_database db;
  pg::connection conn{db.url()};
  bench::enqueue_bulk(conn, jobs, 100, {{"noop", {}, false, 3}});
  push(db.url(), config_json(60, 10));
  auto ws = start_workers(db.url(), true);
  std::atomic<bool> stop{false};
  std::atomic<int> pushed{0};
  std::thread pusher;
  if (pushing)
    pusher = std::thread{[&] {
      for (int i = 1; !stop; ++i) {
        for (int k = 0; k < 100 && !stop; ++k)
          std::this_thread::sleep_for(10ms);
        if (stop)
          break;
        push(db.url(), config_json(60 + 0.001 * i, 10));
        ++pushed;
      }
    }};
  for (auto& w : ws)
    if (w->wait(600) != 0)
      bench::error("a worker exited non-zero:\n%s", w->output().c_str());
  stop = true;
  if (pusher.joinable())
    pusher.join();
  auto busy = conn.exec("SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 "
                        "FROM stage_attempts")
                .f64(0, 0);
  bench::check_all_done_once(conn, jobs, pushing ? "with pushes" : "without pushes");
  double rate = jobs / busy;
  std::printf("    %-15s %8.0f jobs/s (%.2f s%s)\n", pushing ? "pushes every 1 s:" : "no pushes:",
              rate, busy,
              pushing ? (", " + std::to_string(pushed.load()) + " pushes").c_str() : "");
  return rate;
}

} // namespace

int main(int argc, char** argv) {
  int pushes = argc > 1 ? std::atoi(argv[1]) : 100;
  int jobs = argc > 2 ? std::atoi(argv[2]) : 90'000;
  std::printf("reload_latency: %d workers\n", workers);
  latency(pushes);
  std::printf("  throughput, %d jobs, %d workers x 10 stage actors, simulate 0 ms:\n", jobs,
              workers);
  auto without = throughput(jobs, false);
  auto with = throughput(jobs, true);
  std::printf("    ratio with/without pushes: %.3f (goal >= 0.95)\n", with / without);
  return bench::exit_status();
}
