// pickup_latency: a warm idle worker; 200 jobs enqueued 20 ms apart, each in
// its own transaction; latency from the enqueue's commit (when the client
// got the answer) to the executor's start (stage_attempts.started_at, the
// worker's clock on this same machine). graphile-worker: p50 0.69 ms, p99
// 3.17 ms. Goal p50 <= 0.7 ms, p99 <= 3 ms.
//
//   ./dev.sh bench pickup_latency [jobs]

#include "bench/bench_support.hpp"
#include "tests/support/test_db.hpp"

#include <cstdlib>
#include <csignal>
#include <map>
#include <thread>

using namespace spool;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
  int jobs = argc > 1 ? std::atoi(argv[1]) : 200;
  test::fresh_database db;
  std::string json = "{";
  json += bench::bench_worker_json();
  json += R"(, "stages": [{"name": "a", "max_concurrent": 10,
      "executor": {"latency": {"dist": "fixed", "ms": 0}}}]})";
  auto cfg = test::temp_file(json);
  test::spool_process worker{{"--log-level", "warn", "run", "--config", cfg},
                             {{"SPOOL_DATABASE_URL", db.url()}}};
  std::this_thread::sleep_for(1s); // warm: connected, listening, idle

  pg::connection conn{db.url()};
  store::store q{conn};
  std::map<int64_t, double> committed; // task id -> epoch seconds
  for (int i = 0; i < jobs; ++i) {
    store::new_task t;
    t.channel_id = "ch" + std::to_string(i % 7);
    auto id = q.enqueue({t}, {{"a", {}, false, 3}}).at(0).task_id;
    committed[id] = std::chrono::duration<double>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    std::this_thread::sleep_for(20ms);
  }
  std::this_thread::sleep_for(500ms);
  worker.signal(SIGTERM);
  worker.wait(30);
  std::remove(cfg.c_str());

  auto res = conn.exec("SELECT a.task_id, extract(epoch FROM a.started_at)::float8, "
                       "extract(epoch FROM r.claimed_at)::float8 FROM stage_attempts a "
                       "JOIN stage_runs r ON r.id = a.stage_run_id WHERE a.attempt = 1");
  std::vector<double> ms, to_claim;
  for (int i = 0; i < res.rows(); ++i)
    if (auto it = committed.find(res.i64(i, 0)); it != committed.end()) {
      ms.push_back((res.f64(i, 1) - it->second) * 1000.0);
      to_claim.push_back((res.f64(i, 2) - it->second) * 1000.0);
    }
  std::printf("pickup_latency: %zu of %d jobs picked up; commit -> executor start: "
              "p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms\n",
              ms.size(), jobs, bench::percentile(ms, 0.5), bench::percentile(ms, 0.95),
              bench::percentile(ms, 0.99), bench::percentile(ms, 1.0));
  std::printf("  of which commit -> claim transaction start: p50 %.2f ms, p99 %.2f ms\n",
              bench::percentile(to_claim, 0.5), bench::percentile(to_claim, 0.99));
}
