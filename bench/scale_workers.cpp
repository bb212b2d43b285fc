// scale_workers: throughput as `spool run` processes are added, on a
// provider-bound pipeline (one stage, simulate 200 ms, 8 stage actors per
// worker), and a global provider cap that holds whatever the worker count.
//
// Part 1, no global cap: 1, 2 and 4 workers; jobs/s from the first attempt's
// start to the last one's end (excludes worker start-up and the bulk
// enqueue). Goal: 2 workers / 1 worker >= 1.8.
// Part 2, the stage's provider capped at 8 calls in flight: 1, 2 and 4
// workers; the most attempts running at one instant (from stage_attempts
// intervals) must be exactly 8 each time.
//
//   ./dev.sh bench scale_workers [jobs_per_worker]

#include "bench/bench_support.hpp"
#include "tests/support/test_db.hpp"

#include <cstdlib>
#include <memory>

using namespace spool;

namespace {

std::string config_json(bool capped) {
  std::string providers = capped ? R"({"name": "video_api", "max_concurrent": 8})"
                                 : R"({"name": "video_api"})";
  return "{" + bench::bench_worker_json() + R"(, "providers": [)" + providers
         + R"(], "stages": [{"name": "video", "provider": "video_api", "max_concurrent": 8,
           "executor": {"latency": {"dist": "fixed", "ms": 200}}}]})";
}

struct result {
  double jobs_per_s = 0;
  long long max_in_flight = 0;
};

result run(int workers, int jobs, bool capped) {
  test::fresh_database db;
  pg::connection conn{db.url()};
  bench::enqueue_bulk(conn, jobs, 20, {{"video", {}, false, 3}});
  auto cfg = test::temp_file(config_json(capped));
  std::vector<std::unique_ptr<test::spool_process>> ws;
  for (int i = 0; i < workers; ++i)
    ws.push_back(std::make_unique<test::spool_process>(
      std::vector<std::string>{"--log-level", "warn", "run", "--config", cfg, "--exit-when-idle"},
      std::map<std::string, std::string>{{"SPOOL_DATABASE_URL", db.url()}}));
  for (auto& w : ws)
    if (w->wait(600) != 0)
      bench::error("a worker exited non-zero:\n%s", w->output().c_str());
  std::remove(cfg.c_str());
  bench::check_all_done_once(conn, jobs, capped ? "capped" : "uncapped");
  result r;
  auto busy = conn.exec("SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 "
                        "FROM stage_attempts")
                .f64(0, 0);
  r.jobs_per_s = jobs / busy;
  r.max_in_flight =
    conn
      .exec("SELECT coalesce(max(c), 0) FROM (SELECT sum(d) OVER (ORDER BY t, d ROWS UNBOUNDED "
            "PRECEDING) AS c FROM (SELECT started_at AS t, 1 AS d FROM stage_attempts UNION ALL "
            "SELECT finished_at, -1 FROM stage_attempts) e) x")
      .i64(0, 0);
  return r;
}

} // namespace

int main(int argc, char** argv) {
  int per_worker = argc > 1 ? std::atoi(argv[1]) : 400;
  std::printf("scale_workers: one stage, simulate 200 ms, 8 stage actors per worker\n");
  std::printf("  no global cap (%d jobs per worker):\n", per_worker);
  double one = 0;
  for (int n : {1, 2, 4}) {
    auto r = run(n, per_worker * n, false);
    if (n == 1)
      one = r.jobs_per_s;
    std::printf("    %d worker(s): %7.1f jobs/s, %.2fx one worker, at most %lld in flight\n", n,
                r.jobs_per_s, r.jobs_per_s / one, r.max_in_flight);
  }
  std::printf("  provider max_concurrent 8 across all workers (%d jobs):\n", per_worker);
  for (int n : {1, 2, 4}) {
    auto r = run(n, per_worker, true);
    std::printf("    %d worker(s): %7.1f jobs/s, at most %lld in flight%s\n", n, r.jobs_per_s,
                r.max_in_flight, r.max_in_flight == 8 ? "" : "  NOT 8");
    if (r.max_in_flight != 8)
      bench::error("%d workers ran %lld calls at once under a cap of 8", n, r.max_in_flight);
  }
  return bench::exit_status();
}
