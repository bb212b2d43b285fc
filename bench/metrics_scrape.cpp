// metrics_scrape: what serving Prometheus costs a worker.
//
// 1. noop_throughput's run (20,000 single-stage no-op jobs enqueued first,
//    simulate 0 ms, pool sizes 10 and 32; jobs/s from worker start to exit)
//    with /metrics scraped 10 times a second, with the cluster's metrics
//    (the database queries behind them, cached a second), against the same
//    run not scraped; the two alternate within a round, medians over the
//    rounds. Goal: scraped >= 0.95 of not scraped.
// 2. The size of /metrics and its render time with 20 stages and 10
//    providers, every series populated: the worker's own part rendered in
//    process, and HTTP round trips of a live worker's /metrics with the
//    cluster's part (a fresh read of the database, and a cached one).
// Exits 1 when a job was lost, left undone or run twice, or a scrape failed.
//
//   ./dev.sh bench metrics_scrape [jobs] [rounds]   (defaults 20000, 3)

#include "bench/bench_support.hpp"
#include "runtime/worker_metrics.hpp"
#include "tests/support/test_db.hpp"
#include "tests/support/tools.hpp"
#include "tests/support/wait.hpp"

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <thread>

using namespace spool;
using steady = std::chrono::steady_clock;

namespace {

/// The port of the newest worker's endpoint, once it registered; 0 when it
/// did not within `timeout_s`.
int endpoint_port(pg::connection& conn, double timeout_s = 30) {
  int port = 0;
  test::eventually(
    [&] {
      auto r = conn.exec("SELECT http_address FROM workers WHERE http_address IS NOT NULL");
      if (r.rows() == 0)
        return false;
      auto a = r.str(0, 0);
      port = std::stoi(a.substr(a.rfind(':') + 1));
      return true;
    },
    timeout_s, std::chrono::milliseconds{5});
  return port;
}

struct scrape_stats {
  int scrapes = 0;
  int failed = 0;
  size_t bytes = 0;
};

/// Scrapes the worker of `url` every 100 ms until `stop`. A failure counts
/// once a later scrape succeeds: the last ones may meet the worker exiting.
void scrape(const std::string& url, const std::atomic<bool>& stop, scrape_stats& out) {
  pg::connection conn{url};
  int port = endpoint_port(conn);
  if (port == 0) {
    ++out.failed;
    return;
  }
  auto next = steady::now();
  int unanswered = 0;
  while (!stop) {
    auto r = test::http_get(port, "/metrics", 5);
    if (r.status != 200) {
      ++unanswered;
    } else {
      out.failed += std::exchange(unanswered, 0);
      out.bytes = r.body.size();
      ++out.scrapes;
    }
    next += std::chrono::milliseconds{100};
    std::this_thread::sleep_until(next);
  }
}

std::string noop_config(int concurrency) {
  return "{" + bench::bench_worker_json()
         + R"(, "stages": [{"name": "noop", "max_concurrent": )" + std::to_string(concurrency)
         + R"(, "executor": {"latency": {"dist": "fixed", "ms": 0}}}]})";
}

/// 20 stages behind 10 providers (two stages each), every limit kind.
std::string wide_config() {
  std::string cfg = "{" + bench::bench_worker_json() + R"(, "providers": [)";
  for (int p = 0; p < 10; ++p)
    cfg += (p ? ", " : "") + std::string{R"({"name": "provider_)"} + std::to_string(p)
           + R"(", "max_concurrent": 50, "rate": {"per_s": 1000, "burst": 1000},
              "daily_quota": {"units": 1000000}, "breaker": {"consecutive_failures": 1000}})";
  cfg += R"(], "stages": [)";
  for (int s = 0; s < 20; ++s)
    cfg += (s ? ", " : "") + std::string{R"({"name": "stage_)"} + std::to_string(s)
           + R"(", "provider": "provider_)" + std::to_string(s / 2)
           + R"(", "max_concurrent": 4, "price": {"per_call": 0.01},
              "executor": {"latency": {"dist": "fixed", "ms": 1}, "cost": 0.01,
                           "errors": {"transient": 0.2}, "seed": )"
           + std::to_string(s + 1) + "}}";
  return cfg + "]}";
}

} // namespace

int main(int argc, char** argv) {
  int jobs = argc > 1 ? std::atoi(argv[1]) : 20'000;
  int rounds = argc > 2 ? std::atoi(argv[2]) : 3;
  std::printf("metrics_scrape: %d no-op jobs, /metrics (with the cluster's part) scraped every "
              "100 ms vs not scraped, %d rounds\n",
              jobs, rounds);
  for (int concurrency : {10, 32}) {
    std::vector<double> plain, scraped, ratio;
    for (int round = 0; round < rounds; ++round) {
      scrape_stats stats;
      for (bool with_scrapes : {false, true}) {
        test::fresh_database db;
        pg::connection conn{db.url()};
        bench::enqueue_bulk(conn, jobs, 100, {{"noop", {}, false, 3}});
        std::atomic<bool> stop{false};
        std::thread scraper;
        if (with_scrapes)
          scraper = std::thread{[&] { scrape(db.url(), stop, stats); }};
        auto r = bench::run_worker(db.url(), noop_config(concurrency), 600,
                                   {"--http", "127.0.0.1:0", "--cluster-metrics"});
        stop = true;
        if (scraper.joinable())
          scraper.join();
        (with_scrapes ? scraped : plain).push_back(jobs / r.seconds);
        bench::check_all_done_once(conn, jobs, with_scrapes ? "scraped" : "not scraped");
      }
      if (stats.failed > 0 || stats.scrapes == 0)
        bench::error("%d of %d scrapes failed", stats.failed, stats.scrapes);
      ratio.push_back(scraped.back() / plain.back());
      std::printf("  concurrency %2d round %d: not scraped %6.0f jobs/s, scraped %6.0f jobs/s "
                  "(%.3f; %d scrapes of %zu bytes)\n",
                  concurrency, round + 1, plain.back(), scraped.back(), ratio.back(),
                  stats.scrapes, stats.bytes);
      std::fflush(stdout);
    }
    std::printf("concurrency %2d: median not scraped %6.0f jobs/s, scraped %6.0f jobs/s; %.3f "
                "of not scraped (median of the rounds' ratios; goal >= 0.95)\n",
                concurrency, bench::percentile(plain, 0.5), bench::percentile(scraped, 0.5),
                bench::percentile(ratio, 0.5));
  }

  // 2. Size and render time with 20 stages and 10 providers.
  {
    worker_metrics m;
    const char* kinds[] = {"ok", "transient", "rate_limited", "timeout"};
    for (int s = 0; s < 20; ++s) {
      auto stage = "stage_" + std::to_string(s);
      auto meters = m.stage(stage);
      auto provider = m.provider(stage, "provider_" + std::to_string(s / 2));
      for (const char* k : kinds)
        for (int i = 0; i < 10; ++i)
          m.attempt_finished(meters, provider, stage, k, 0.001 * (i + 1) * (s + 1), 0.01);
      meters.claim_duration->observe(0.002);
    }
    m.recorded(0.003);
    auto text = m.render();
    std::vector<double> us;
    for (int i = 0; i < 200; ++i) {
      auto t0 = steady::now();
      auto t = m.render();
      us.push_back(std::chrono::duration<double, std::micro>(steady::now() - t0).count());
      if (t.size() != text.size())
        bench::error("render size changed");
    }
    std::printf("20 stages, 10 providers, the worker's own part rendered in process: %zu bytes, "
                "median %.0f us, p99 %.0f us (200 renders)\n",
                text.size(), bench::percentile(us, 0.5), bench::percentile(us, 0.99));
  }
  {
    test::fresh_database db;
    pg::connection conn{db.url()};
    auto cfg = test::temp_file(wide_config());
    std::string lines;
    for (int i = 0; i < 200; ++i)
      lines += R"({"channel_id":"ch)" + std::to_string(i % 8) + R"(","payload":{}})" + "\n";
    auto res = test::run_spool({"enqueue", "--config", cfg, "--file", "-"},
                               {{"SPOOL_DATABASE_URL", db.url()}}, lines);
    if (res.exit_code != 0)
      bench::error("enqueue failed: %s", res.err.c_str());
    test::spool_process w{{"--log-level", "warn", "run", "--config", cfg, "--http",
                           "127.0.0.1:0", "--cluster-metrics"},
                          {{"SPOOL_DATABASE_URL", db.url()}}};
    int port = endpoint_port(conn);
    test::eventually(
      [&] {
        return conn.exec("SELECT count(*) FROM tasks WHERE state IN ('completed', 'failed')")
                 .i64(0, 0)
               == 200;
      },
      120);
    std::vector<double> fresh_ms, cached_ms;
    size_t bytes = 0;
    int failed = 0;
    for (int i = 0; i < 20; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds{1050}); // past the cache
      for (auto* into : {&fresh_ms, &cached_ms}) {
        auto t0 = steady::now();
        auto r = test::http_get(port, "/metrics");
        into->push_back(std::chrono::duration<double, std::milli>(steady::now() - t0).count());
        if (r.status != 200)
          ++failed;
        bytes = r.body.size();
      }
    }
    if (failed > 0)
      bench::error("%d scrapes of the wide worker failed", failed);
    std::printf("20 stages, 10 providers, a live worker's /metrics with the cluster's part: %zu "
                "bytes; round trip median %.2f ms (p90 %.2f) reading the database, %.2f ms "
                "(p90 %.2f) from the cache (20 each)\n",
                bytes, bench::percentile(fresh_ms, 0.5), bench::percentile(fresh_ms, 0.9),
                bench::percentile(cached_ms, 0.5), bench::percentile(cached_ms, 0.9));
    w.signal(SIGTERM);
    if (w.wait(60) != 0)
      bench::error("the wide worker did not drain cleanly:\n%s", w.output().c_str());
  }
  return bench::exit_status();
}
