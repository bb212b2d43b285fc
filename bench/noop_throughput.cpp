// noop_throughput: 20,000 single-stage jobs enqueued in bulk first, executor
// simulate 0 ms, pool sizes 10 and 32; jobs/s from worker start until all
// are done in the database (the worker exits when idle). Each pool size runs
// twice: without a provider, then with the stage behind a provider whose
// limits (cap, rate, quota, breaker) are never reached; goal >= 0.8 of
// without.
// Same scenario on this machine class: graphile-worker 0.18 8,800 jobs/s,
// pg-boss 12.38 6,300. Goal >= 20,000. Exits 1 when a job was lost, left
// undone or run twice, or the worker failed.
//
//   ./dev.sh bench noop_throughput [jobs]

#include "bench/bench_support.hpp"
#include "tests/support/test_db.hpp"

#include <cstdlib>

using namespace spool;

int main(int argc, char** argv) {
  int jobs = argc > 1 ? std::atoi(argv[1]) : 20'000;
  std::printf("noop_throughput: %d jobs, simulate 0 ms\n", jobs);
  // Each pool size without a provider, then with every call behind a
  // provider whose limits are never reached: a cap only (as the seed's
  // video provider), then all four kinds (admission paid in full).
  const std::string providers[] = {
    "",
    R"("providers": [{"name": "api", "max_concurrent": 100000}], )",
    R"("providers": [{"name": "api", "max_concurrent": 100000, "rate": {"per_s": 100000,
      "burst": 100000}, "daily_quota": {"units": 1e9}, "breaker": {"consecutive_failures": 1000}}], )"};
  const char* names[] = {"          ", ", cap only", ", all four"};
  for (int concurrency : {10, 32}) {
    double plain = 0;
    for (int kind : {0, 1, 2}) {
      bool limited = kind > 0;
      const auto& provider = providers[kind];
      test::fresh_database db;
      pg::connection conn{db.url()};
      bench::enqueue_bulk(conn, jobs, 100, {{"noop", {}, false, 3}});
      std::string cfg = "{";
      cfg += bench::bench_worker_json();
      cfg += ", ";
      if (limited)
        cfg += provider;
      cfg += R"("stages": [{"name": "noop", "max_concurrent": )";
      cfg += std::to_string(concurrency);
      if (limited)
        cfg += R"(, "provider": "api")";
      cfg += R"(, "executor": {"latency": {"dist": "fixed", "ms": 0}}}]})";
      auto r = bench::run_worker(db.url(), cfg);
      auto done = conn.exec("SELECT count(*) FROM stage_runs WHERE state = 'done'").i64(0, 0);
      auto busy =
        conn.exec("SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 "
                  "FROM stage_attempts")
          .f64(0, 0);
      std::printf("  concurrency %2d%s: %8.0f jobs/s start-to-exit (%.2f s), %8.0f jobs/s first "
                  "start to last finish; %lld done%s",
                  concurrency, names[kind], jobs / r.seconds, r.seconds,
                  jobs / busy, static_cast<long long>(done), done == jobs ? "" : "  INCOMPLETE");
      if (limited)
        std::printf("  (%.2f of without)", (jobs / r.seconds) / plain);
      else
        plain = jobs / r.seconds;
      std::printf("\n");
      bench::check_all_done_once(conn, jobs,
                                 ("concurrency " + std::to_string(concurrency)
                                  + names[kind])
                                   .c_str());
    }
  }
  return bench::exit_status();
}
