// enqueue_throughput: bulk enqueue, measured two ways on fresh databases of
// the local cluster (fsync on):
//
//  - the library call: store::enqueue of 20,000 single-stage videos in one
//    call, timed around the call, as graphile-worker's own benchmark times
//    addJobs (20,000 jobs in one call; 62k jobs/s on this machine class);
//  - the command: `spool enqueue --file` of a JSONL file of 100,000 videos,
//    timed from process start to exit (reading and validating the file,
//    loading the config, connecting, printing 100,000 task ids), once with
//    a one-stage pipeline and once with the shipped config/spool.json (every
//    video gets a task and a run per stage).
//
// Excluded: writing the JSONL file and creating the database. Each figure is
// the median of `rounds`. Exits 1 when a count is off.
//
//   ./dev.sh bench enqueue_throughput [videos] [rounds]
//   defaults: 100000 videos, 3 rounds

#include "bench/bench_support.hpp"
#include "runtime/store/store.hpp"
#include "tests/support/test_db.hpp"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

using namespace spool;

namespace {

double median(std::vector<double> xs) {
  return bench::percentile(std::move(xs), 0.5);
}

} // namespace

int main(int argc, char** argv) {
  int videos = argc > 1 ? std::atoi(argv[1]) : 100'000;
  int rounds = argc > 2 ? std::atoi(argv[2]) : 3;
  constexpr int call_size = 20'000;

  auto jsonl = test::temp_file("", ".jsonl");
  {
    std::ofstream out{jsonl};
    for (int i = 0; i < videos; ++i)
      out << R"({"client_id": "c1", "campaign_id": "k1", "channel_id": "ch)" << i % 100
          << R"(", "payload": {"topic": "video )" << i << R"("}})" << '\n';
  }
  const std::string one_stage = test::temp_file(
    R"({"stages": [{"name": "noop", "executor": {"latency": {"dist": "fixed", "ms": 0}}}]})");
  const std::string shipped = SPOOL_SOURCE_DIR "/config/spool.json";

  std::vector<double> call_rate, cli_one, cli_shipped;
  int64_t shipped_runs = 0;
  for (int round = 0; round < rounds; ++round) {
    {
      test::fresh_database db;
      pg::connection conn{db.url()};
      store::store q{conn};
      std::vector<store::new_task> tasks(call_size);
      for (int i = 0; i < call_size; ++i) {
        tasks[static_cast<size_t>(i)].channel_id = "ch" + std::to_string(i % 100);
        tasks[static_cast<size_t>(i)].payload = R"({"topic": "video )" + std::to_string(i) + "\"}";
      }
      auto t0 = std::chrono::steady_clock::now();
      auto got = q.enqueue(tasks, {{"noop", {}, false, 3}});
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (static_cast<int>(got.size()) != call_size)
        bench::error("store::enqueue returned %zu of %d", got.size(), call_size);
      call_rate.push_back(call_size / s);
    }
    for (const auto* cfg : {&one_stage, &shipped}) {
      test::fresh_database db;
      auto t0 = std::chrono::steady_clock::now();
      test::spool_process p{{"--log-level", "warn", "enqueue", "--config", *cfg, "--file", jsonl},
                            {{"SPOOL_DATABASE_URL", db.url()}}};
      int code = p.wait(600);
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      pg::connection conn{db.url()};
      auto tasks = conn.exec("SELECT count(*) FROM tasks").i64(0, 0);
      if (code != 0 || tasks != videos)
        bench::error("spool enqueue exited %d with %lld of %d tasks:\n%s", code,
                     static_cast<long long>(tasks), videos, p.output().substr(0, 2000).c_str());
      (cfg == &one_stage ? cli_one : cli_shipped).push_back(videos / s);
      if (cfg == &shipped)
        shipped_runs = conn.exec("SELECT count(*) FROM stage_runs").i64(0, 0);
    }
    std::printf("  round %d: store::enqueue %.0f videos/s; spool enqueue --file: one stage %.0f "
                "videos/s, shipped pipeline %.0f videos/s\n",
                round + 1, call_rate.back(), cli_one.back(), cli_shipped.back());
    std::fflush(stdout);
  }
  std::printf("enqueue_throughput: store::enqueue of %d single-stage videos in one call: %.0f "
              "videos/s (median of %d)\n",
              call_size, median(call_rate), rounds);
  std::printf("enqueue_throughput: spool enqueue --file of %d videos, process start to exit: "
              "one stage %.0f videos/s; shipped config/spool.json (%.1f runs a video) %.0f "
              "videos/s (medians of %d)\n",
              videos, median(cli_one), static_cast<double>(shipped_runs) / videos,
              median(cli_shipped), rounds);
  std::remove(jsonl.c_str());
  std::remove(one_stage.c_str());
  return bench::exit_status();
}
