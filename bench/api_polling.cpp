// api_polling: the seed's load test of the client API. 10 jobs in flight
// (enqueued through the API; a worker runs them through stages of a few
// seconds each, so their views keep changing) and clients polling
// GET /api/v2/jobs/{id}, first 1,000 polls a minute, then 10,000, each
// phase 30 s, from 10 concurrent clients (one job each, plain GETs without
// If-None-Match: the worst case for the server). Prints p50/p99 response
// time (client side, connect to last byte, a new connection a poll) and the
// database reads per poll (spool_api_view_reads_total from the server's
// /metrics over the polls answered). Goal: polls served from the cache kept
// fresh by NOTIFY, not a query each. Exits 1 on a failed poll.
//
//   ./dev.sh bench api_polling [seconds per phase]   (default 30)

#include "bench/bench_support.hpp"
#include "tests/support/serve.hpp"
#include "tests/support/test_db.hpp"
#include "tests/support/tools.hpp"
#include "tests/support/wait.hpp"

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <mutex>
#include <thread>

using namespace spool;
using steady = std::chrono::steady_clock;

namespace {

/// A metric's value in an exposition (the sum of its series); 0 if absent.
double metric(const std::string& text, const std::string& name) {
  double sum = 0;
  size_t at = 0;
  while ((at = text.find(name, at)) != std::string::npos) {
    bool line_start = at == 0 || text[at - 1] == '\n';
    auto end = text.find('\n', at);
    auto line = text.substr(at, end - at);
    at = end == std::string::npos ? text.size() : end;
    if (!line_start || (line[name.size()] != ' ' && line[name.size()] != '{'))
      continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

} // namespace

int main(int argc, char** argv) {
  double phase_s = argc > 1 ? std::atof(argv[1]) : 30;
  std::printf("api_polling: 10 jobs in flight, 10 clients polling GET /api/v2/jobs/{id}, "
              "%.0f s a phase\n",
              phase_s);
  test::fresh_database db;
  pg::connection conn{db.url()};
  std::map<std::string, std::string> env{{"SPOOL_DATABASE_URL", db.url()}};
  // Five stages of 1-4 s: each job changes every few seconds for the
  // whole run (jobs that finish are replaced).
  auto cfg = test::temp_file(R"({"worker": {"idle_poll_s": 0.2},
    "api": {"requests_per_s": 100000, "burst": 100000},
    "stages": [
      {"name": "a", "executor": {"latency": {"dist": "uniform", "min_ms": 1000, "max_ms": 4000}}},
      {"name": "b", "after": ["a"], "executor": {"latency": {"dist": "uniform", "min_ms": 1000, "max_ms": 4000}}},
      {"name": "c", "after": ["b"], "executor": {"latency": {"dist": "uniform", "min_ms": 1000, "max_ms": 4000}}},
      {"name": "d", "after": ["c"], "executor": {"latency": {"dist": "uniform", "min_ms": 1000, "max_ms": 4000}}},
      {"name": "e", "after": ["d"], "executor": {"latency": {"dist": "uniform", "min_ms": 1000, "max_ms": 4000}}}]})");
  test::serve_process serve{cfg, env, {"--log-level", "warn"}};
  int port = serve.port;
  test::spool_process worker{{"--log-level", "warn", "run", "--config", cfg}, env};

  std::mutex ids_mtx;
  std::vector<int64_t> ids;
  auto enqueue = [&] {
    auto r = test::http_request(port, "POST", "/api/v2/jobs", 10,
                                R"({"channel_id": "UCbench", "payload": {"title": "t"}})");
    if (r.status != 201) {
      bench::error("enqueue answered %d: %s", r.status, r.body.c_str());
      return int64_t{0};
    }
    return static_cast<int64_t>(std::stoll(r.body.substr(r.body.find(':') + 1)));
  };
  for (int i = 0; i < 10; ++i)
    ids.push_back(enqueue());

  std::atomic<bool> stop{false};
  // Keeps 10 jobs in flight: a finished one is replaced by a new one.
  std::thread keeper{[&] {
    while (!stop) {
      std::this_thread::sleep_for(std::chrono::milliseconds{250});
      for (int i = 0; i < 10; ++i) {
        int64_t id;
        {
          std::lock_guard guard{ids_mtx};
          id = ids[static_cast<size_t>(i)];
        }
        auto state = conn.exec("SELECT state::text FROM tasks WHERE id = $1", {std::to_string(id)})
                       .str(0, 0);
        if (state == "completed" || state == "failed") {
          auto fresh = enqueue();
          std::lock_guard guard{ids_mtx};
          ids[static_cast<size_t>(i)] = fresh;
        }
      }
    }
  }};

  for (int per_minute : {1000, 10000}) {
    auto before = test::http_get(port, "/metrics").body;
    std::vector<std::vector<double>> lat(10);
    std::atomic<int> failed{0};
    std::vector<std::thread> clients;
    double per_client_s = 60.0 / per_minute * 10; // seconds between one client's polls
    auto start = steady::now();
    auto until = start + std::chrono::duration_cast<steady::duration>(
                           std::chrono::duration<double>(phase_s));
    for (int c = 0; c < 10; ++c)
      clients.emplace_back([&, c] {
        // Spread the clients over the interval.
        auto next = start + std::chrono::duration_cast<steady::duration>(
                              std::chrono::duration<double>(per_client_s * c / 10));
        while (next < until) {
          std::this_thread::sleep_until(next);
          int64_t id;
          {
            std::lock_guard guard{ids_mtx};
            id = ids[static_cast<size_t>(c)];
          }
          auto t0 = steady::now();
          auto r = test::http_get(port, "/api/v2/jobs/" + std::to_string(id), 10);
          lat[static_cast<size_t>(c)].push_back(
            std::chrono::duration<double, std::milli>(steady::now() - t0).count());
          if (r.status != 200)
            ++failed;
          next += std::chrono::duration_cast<steady::duration>(
            std::chrono::duration<double>(per_client_s));
        }
      });
    for (auto& t : clients)
      t.join();
    auto after = test::http_get(port, "/metrics").body;
    std::vector<double> all;
    for (auto& l : lat)
      all.insert(all.end(), l.begin(), l.end());
    auto polls = metric(after, "spool_api_requests_total") - metric(before, "spool_api_requests_total");
    auto reads = metric(after, "spool_api_view_reads_total")
                 - metric(before, "spool_api_view_reads_total");
    if (failed > 0)
      bench::error("%d polls failed", failed.load());
    std::printf("%5d polls a minute: %zu polls, p50 %.2f ms, p99 %.2f ms, max %.2f ms; %.0f "
                "database reads for %.0f requests answered: %.3f a poll\n",
                per_minute, all.size(), bench::percentile(all, 0.5),
                bench::percentile(all, 0.99), bench::percentile(all, 1.0), reads, polls,
                polls > 0 ? reads / polls : 0.0);
    std::fflush(stdout);
  }
  stop = true;
  keeper.join();
  worker.signal(SIGTERM);
  serve.proc.signal(SIGTERM);
  if (worker.wait(60) != 0)
    bench::error("the worker did not drain cleanly");
  if (serve.proc.wait(30) != 0)
    bench::error("spool serve did not stop cleanly");
  return bench::exit_status();
}
