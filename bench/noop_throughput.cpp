// noop_throughput: 20,000 single-stage jobs enqueued in bulk first, executor
// simulate 0 ms, pool sizes 10 and 32; jobs/s from worker start until all
// are done in the database (the worker exits when idle).
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
  for (int concurrency : {10, 32}) {
    test::fresh_database db;
    pg::connection conn{db.url()};
    bench::enqueue_bulk(conn, jobs, 100, {{"noop", {}, false, 3}});
    std::string cfg = "{";
    cfg += bench::bench_worker_json();
    cfg += R"(, "stages": [{"name": "noop", "max_concurrent": )";
    cfg += std::to_string(concurrency);
    cfg += R"(, "executor": {"latency": {"dist": "fixed", "ms": 0}}}]})";
    auto r = bench::run_worker(db.url(), cfg);
    auto done = conn.exec("SELECT count(*) FROM stage_runs WHERE state = 'done'").i64(0, 0);
    auto busy = conn.exec("SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 "
                          "FROM stage_attempts")
                  .f64(0, 0);
    std::printf("  concurrency %2d: %8.0f jobs/s start-to-exit (%.2f s), %8.0f jobs/s first "
                "start to last finish; %lld done%s\n",
                concurrency, jobs / r.seconds, r.seconds, jobs / busy,
                static_cast<long long>(done), done == jobs ? "" : "  INCOMPLETE");
    bench::check_all_done_once(conn, jobs,
                               ("concurrency " + std::to_string(concurrency)).c_str());
  }
  return bench::exit_status();
}
