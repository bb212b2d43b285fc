#pragma once
// Shared plumbing of the worker benchmarks: a fresh database on the local
// cluster, bulk enqueue, a real `spool run` process timed from its start to
// its exit, and the correctness checks every bench ends with (a bench whose
// jobs were lost or run twice measured nothing: it exits 1).

#include "runtime/pg/connection.hpp"
#include "runtime/store/store.hpp"
#include "tests/support/cli.hpp"

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <vector>

namespace spool::bench {

// -- correctness -----------------------------------------------------------------

/// Correctness errors found so far; main returns exit_status().
inline int& error_count() {
  static int n = 0;
  return n;
}

/// Reports a correctness error (printf format) on stderr and counts it.
[[gnu::format(printf, 1, 2)]] inline void error(const char* fmt, ...) {
  std::fprintf(stderr, "ERROR: ");
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
  std::fprintf(stderr, "\n");
  ++error_count();
}

/// 0 when the run was correct; else 1, after saying how many errors.
inline int exit_status() {
  if (error_count() == 0)
    return 0;
  std::fprintf(stderr, "%d correctness error(s): the numbers above are not valid\n",
               error_count());
  return 1;
}

/// Checks that every one of `runs` stage runs ended done after exactly one
/// execution: none lost, none left behind, none executed twice.
inline void check_all_done_once(pg::connection& conn, long long runs, const char* what) {
  auto r = conn.exec(
    "SELECT count(*), count(*) FILTER (WHERE state = 'done'), "
    "count(*) FILTER (WHERE attempt <> 1), "
    "(SELECT count(*) FROM stage_attempts), "
    "(SELECT count(*) FROM (SELECT 1 FROM stage_attempts WHERE outcome = 'ok' "
    "   GROUP BY stage_run_id HAVING count(*) > 1) twice) "
    "FROM stage_runs");
  long long total = r.i64(0, 0), done = r.i64(0, 1), reclaimed = r.i64(0, 2),
            attempts = r.i64(0, 3), ok_twice = r.i64(0, 4);
  if (total != runs)
    error("%s: %lld stage runs in the database, expected %lld", what, total, runs);
  if (done != runs)
    error("%s: %lld of %lld stage runs done", what, done, runs);
  if (reclaimed != 0 || attempts != total)
    error("%s: %lld runs claimed more than once (%lld attempts for %lld runs)", what, reclaimed,
          attempts, total);
  if (ok_twice != 0)
    error("%s: %lld runs completed twice", what, ok_twice);
}

inline void enqueue_bulk(pg::connection& conn, int n, int channels,
                         const std::vector<store::pipeline_stage>& pipeline,
                         const std::string& payload = "{}") {
  store::store q{conn};
  for (int done = 0; done < n;) {
    int chunk = std::min(n - done, 50'000);
    std::vector<store::new_task> tasks(static_cast<size_t>(chunk));
    for (int i = 0; i < chunk; ++i) {
      tasks[static_cast<size_t>(i)].channel_id = "ch" + std::to_string((done + i) % channels);
      tasks[static_cast<size_t>(i)].payload = payload;
    }
    q.enqueue(tasks, pipeline);
    done += chunk;
  }
  conn.exec("VACUUM ANALYZE");
}

struct worker_run {
  double seconds = 0;
  int exit_code = -1;
  long max_rss_kb = 0;
  std::string output;
};

/// Runs `spool run --exit-when-idle` with `config_json` (and `extra`
/// arguments of run) until it exits.
inline worker_run run_worker(const std::string& url, const std::string& config_json,
                             double timeout_s = 600, const std::vector<std::string>& extra = {}) {
  auto cfg = test::temp_file(config_json);
  auto start = std::chrono::steady_clock::now();
  std::vector<std::string> args{"--log-level", "warn", "run", "--config", cfg,
                                "--exit-when-idle"};
  args.insert(args.end(), extra.begin(), extra.end());
  test::spool_process p{args, {{"SPOOL_DATABASE_URL", url}}};
  worker_run r;
  r.exit_code = p.wait(timeout_s);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.max_rss_kb = p.max_rss_kb();
  r.output = p.output();
  std::remove(cfg.c_str());
  if (r.exit_code != 0)
    error("worker exited %d:\n%s", r.exit_code, r.output.c_str());
  return r;
}

inline double percentile(std::vector<double> xs, double p) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto i = static_cast<size_t>(p * static_cast<double>(xs.size() - 1) + 0.5);
  return xs[std::min(i, xs.size() - 1)];
}

/// Worker settings for benchmarks: quick idle detection.
inline std::string bench_worker_json(int claim_batch_limit = 100) {
  return R"("worker": {"idle_poll_s": 0.05, "heartbeat_interval_s": 1, "lease_s": 30,
    "claim_batch_limit": )" + std::to_string(claim_batch_limit) + "}";
}

} // namespace spool::bench
