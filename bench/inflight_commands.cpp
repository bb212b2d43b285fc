// inflight_commands: 2,000 jobs in flight at once on a `command` stage, in
// rounds, on one worker that stays up between them. Each job runs a real
// program, bash printing its own start time and then exec'ing `sleep 2`, so a
// round has every job's process alive at once. Per round it prints:
//
//  - claim -> process start: from the claim's transaction start
//    (stage_runs.claimed_at) to the program's first instruction (its own
//    clock reading, in its output); p50, p99, max;
//  - how long until all 2,000 had started (first claim to last start);
//  - the worker's RSS and open file descriptors at the peak of the round
//    (sampled from /proc every 20 ms) and once the round is done.
//
// Growth: the last round's numbers after the round against the first's
// (goal: none beyond noise). Exits 1 when a job was lost, failed, ran twice,
// or the worker failed.
//
//   ./dev.sh bench inflight_commands [jobs] [rounds]
//   defaults: 2000 jobs, 3 rounds

#include "bench/bench_support.hpp"
#include "tests/support/test_db.hpp"

#include <dirent.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

using namespace spool;
using namespace std::chrono_literals;

namespace {

long rss_kb(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0)
      return std::atol(line.c_str() + 6);
  return 0;
}

int open_fds(int pid) {
  int n = 0;
  if (DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
    while (auto* e = ::readdir(d))
      n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

struct sample {
  long rss_kb = 0;
  int fds = 0;
};

} // namespace

int main(int argc, char** argv) {
  int jobs = argc > 1 ? std::atoi(argv[1]) : 2'000;
  int rounds = argc > 2 ? std::atoi(argv[2]) : 3;
  test::fresh_database db;
  pg::connection conn{db.url()};
  std::string cfg_json = "{";
  cfg_json += bench::bench_worker_json(1000);
  cfg_json += R"(, "stages": [{"name": "cmd", "max_concurrent": )";
  cfg_json += std::to_string(jobs);
  // One process a job: bash prints its own start (EPOCHREALTIME, seconds
  // with microseconds) as the result line, then becomes sleep.
  cfg_json += R"(, "timeout_s": 120, "executor": {"kind": "command", "argv": ["/bin/bash", "-c",
      "printf '{\"status\":\"ok\",\"output\":{\"started_s\":%s}}\\n' $EPOCHREALTIME; exec sleep 2"]}}]})";
  auto cfg = test::temp_file(cfg_json);
  test::spool_process worker{{"--log-level", "warn", "run", "--config", cfg},
                             {{"SPOOL_DATABASE_URL", db.url()}}};
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (conn.exec("SELECT count(*) FROM workers").i64(0, 0) < 1) {
    if (std::chrono::steady_clock::now() > deadline || !worker.running()) {
      bench::error("the worker did not register within 30 s:\n%s", worker.output().c_str());
      return bench::exit_status();
    }
    std::this_thread::sleep_for(20ms);
  }
  std::this_thread::sleep_for(500ms);
  auto idle = sample{rss_kb(worker.pid()), open_fds(worker.pid())};
  std::printf("inflight_commands: %d jobs a round on one command stage (bash, then sleep 2 s), "
              "%d rounds, one worker; idle worker: RSS %.1f MB, %d fds\n",
              jobs, rounds, idle.rss_kb / 1024.0, idle.fds);
  std::vector<sample> after;
  for (int round = 1; round <= rounds; ++round) {
    bench::enqueue_bulk(conn, jobs, 100, {{"cmd", {}, false, 0}});
    sample peak;
    auto round_deadline = std::chrono::steady_clock::now() + 300s;
    int64_t done = 0;
    while ((done = conn.exec("SELECT count(*) FROM stage_runs WHERE state IN ('done', 'failed')")
                     .i64(0, 0))
           < static_cast<int64_t>(round) * jobs) {
      peak.rss_kb = std::max(peak.rss_kb, rss_kb(worker.pid()));
      peak.fds = std::max(peak.fds, open_fds(worker.pid()));
      if (std::chrono::steady_clock::now() > round_deadline || !worker.running()) {
        bench::error("round %d: %lld of %d jobs finished:\n%s", round,
                     static_cast<long long>(done - static_cast<int64_t>(round - 1) * jobs), jobs,
                     worker.output().c_str());
        return bench::exit_status();
      }
      std::this_thread::sleep_for(20ms);
    }
    std::this_thread::sleep_for(500ms);
    sample settled{rss_kb(worker.pid()), open_fds(worker.pid())};
    after.push_back(settled);
    // This round's runs: claimed after the previous round's.
    auto res = conn.query(
      "SELECT (r.output->>'started_s')::float8 - extract(epoch FROM r.claimed_at)::float8, "
      "(r.output->>'started_s')::float8 "
      "FROM stage_runs r JOIN stage_attempts a ON a.stage_run_id = r.id "
      "WHERE a.outcome = 'ok' AND r.id > (SELECT coalesce(max(id), 0) FROM stage_runs) - $1::bigint",
      static_cast<int64_t>(jobs));
    std::vector<double> to_start_ms;
    double first_start = 1e300, last_start = 0;
    for (int i = 0; i < res.rows(); ++i) {
      to_start_ms.push_back(res.f64(i, 0) * 1000.0);
      first_start = std::min(first_start, res.f64(i, 1));
      last_start = std::max(last_start, res.f64(i, 1));
    }
    auto first_claim = conn.query("SELECT extract(epoch FROM min(r.claimed_at))::float8 "
                                 "FROM stage_runs r WHERE r.id > (SELECT max(id) FROM "
                                 "stage_runs) - $1::bigint",
                                 static_cast<int64_t>(jobs))
                         .f64(0, 0);
    if (static_cast<int>(to_start_ms.size()) != jobs)
      bench::error("round %d: %zu of %d jobs ran ok", round, to_start_ms.size(), jobs);
    std::printf("  round %d: claim -> process start p50 %.1f ms, p99 %.1f ms, max %.1f ms; "
                "all %d started %.2f s after the first claim; peak RSS %.1f MB, %d fds; "
                "after the round RSS %.1f MB, %d fds\n",
                round, bench::percentile(to_start_ms, 0.5), bench::percentile(to_start_ms, 0.99),
                bench::percentile(to_start_ms, 1.0), jobs, last_start - first_claim,
                peak.rss_kb / 1024.0, peak.fds, settled.rss_kb / 1024.0, settled.fds);
    std::fflush(stdout);
  }
  if (!after.empty())
    std::printf("growth after the rounds, last vs first: RSS %+.1f MB, fds %+d\n",
                (after.back().rss_kb - after.front().rss_kb) / 1024.0,
                after.back().fds - after.front().fds);
  worker.signal(SIGTERM);
  if (int code = worker.wait(60); code != 0)
    bench::error("worker exited %d:\n%s", code, worker.output().c_str());
  std::remove(cfg.c_str());
  bench::check_all_done_once(conn, jobs * rounds, "inflight_commands");
  return bench::exit_status();
}
