// inflight_scale: 10,000 jobs in flight at once in one worker process
// (simulate, 10 s latency, a pool of 10,000 stage actors): peak RSS and the
// time to dispatch them all. Goal <= 300 MB RSS. Exits 1 when a job was lost,
// left undone or run twice, or the worker failed.
//
//   ./dev.sh bench inflight_scale [jobs]

#include "bench/bench_support.hpp"
#include "tests/support/test_db.hpp"

#include <cstdlib>

using namespace spool;

int main(int argc, char** argv) {
  int jobs = argc > 1 ? std::atoi(argv[1]) : 10'000;
  test::fresh_database db;
  pg::connection conn{db.url()};
  bench::enqueue_bulk(conn, jobs, 100, {{"slow", {}, false, 3}});
  std::string cfg = "{";
  cfg += bench::bench_worker_json(1000);
  cfg += R"(, "stages": [{"name": "slow", "max_concurrent": )";
  cfg += std::to_string(jobs);
  cfg += R"(, "timeout_s": 120, "executor": {"latency": {"dist": "fixed", "ms": 10000}}}]})";
  auto r = bench::run_worker(db.url(), cfg);
  auto res = conn.exec(
    "SELECT extract(epoch FROM max(started_at) - min(started_at))::float8, "
    "count(*) FILTER (WHERE outcome = 'ok') FROM stage_attempts");
  std::printf("inflight_scale: %lld/%d done; all %d dispatched within %.3f s of the first; "
              "peak RSS %.1f MB; worker start to exit %.2f s\n",
              static_cast<long long>(res.i64(0, 1)), jobs, jobs, res.f64(0, 0),
              r.max_rss_kb / 1024.0, r.seconds);
  bench::check_all_done_once(conn, jobs, "inflight");
  return bench::exit_status();
}
