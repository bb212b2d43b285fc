// pipeline_efficiency: 50 videos through five sequential stages with fixed
// simulated latencies: asset_gen 200 ms x5, video_gen 600 ms x3, narration
// 100 ms x10, sfx 100 ms x10, assembly 200 ms x5. Lower bound 10.8 s
// (video_gen: 17 waves of 600 ms after the first asset_gen, then 400 ms of
// tail). graphile-worker reaches bound/makespan 0.984, pg-boss 0.975.
// Goal >= 0.995. Exits 1 when a video did not complete, a stage ran twice or
// the worker failed.
//
//   ./dev.sh bench pipeline_efficiency

#include "bench/bench_support.hpp"
#include "tests/support/test_db.hpp"

using namespace spool;

int main() {
  test::fresh_database db;
  pg::connection conn{db.url()};
  std::vector<store::pipeline_stage> chain{{"asset_gen", {}, false, 3},
                                           {"video_gen", {"asset_gen"}, false, 3},
                                           {"narration", {"video_gen"}, false, 3},
                                           {"sfx", {"narration"}, false, 3},
                                           {"assembly", {"sfx"}, false, 3}};
  bench::enqueue_bulk(conn, 50, 5, chain);
  auto stage = [](const char* name, const char* after, int n, int ms) {
    return std::string{R"({"name": ")"} + name + R"(", "after": [)" + after
           + R"(], "max_concurrent": )" + std::to_string(n)
           + R"(, "executor": {"latency": {"dist": "fixed", "ms": )" + std::to_string(ms)
           + "}}}";
  };
  auto cfg = "{" + bench::bench_worker_json() + R"(, "stages": [)"
             + stage("asset_gen", "", 5, 200) + "," + stage("video_gen", R"("asset_gen")", 3, 600)
             + "," + stage("narration", R"("video_gen")", 10, 100) + ","
             + stage("sfx", R"("narration")", 10, 100) + "," + stage("assembly", R"("sfx")", 5, 200)
             + "]}";
  auto r = bench::run_worker(db.url(), cfg);
  auto makespan = conn.exec("SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 "
                            "FROM stage_attempts")
                    .f64(0, 0);
  auto done = conn.exec("SELECT count(*) FROM tasks WHERE state = 'completed'").i64(0, 0);
  constexpr double bound = 10.8;
  std::printf("pipeline_efficiency: %lld/50 videos; makespan (first start to last finish) "
              "%.3f s, bound %.1f s, efficiency %.4f; worker start to exit %.3f s (%.4f)\n",
              static_cast<long long>(done), makespan, bound, bound / makespan, r.seconds,
              bound / r.seconds);
  if (done != 50)
    bench::error("%lld of 50 videos completed", static_cast<long long>(done));
  bench::check_all_done_once(conn, 50 * 5, "pipeline");
  return bench::exit_status();
}
