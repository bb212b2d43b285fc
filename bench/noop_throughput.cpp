// noop_throughput: 20,000 single-stage jobs enqueued in bulk first, executor
// simulate 0 ms, pool sizes 10 and 32; jobs/s from worker start until all
// are done in the database (the worker exits when idle). Each pool size runs
// three ways: without a provider, then with the stage behind a provider whose
// limits are never reached (a cap only; cap, rate, quota and breaker);
// goal >= 0.8 of without. Each round also measures the raw ceiling at the same batch size
// (store_throughput's baseline: a bare table claimed with a lease in one
// transaction and completed in another, by one claim and one record
// connection; runs/s of the database work alone); goal: Spool's worker at
// least half of it.
// The peers' figures come from ../shared/peers/compare.sh in the same run
// (goal: at least 3x the best). Exits 1 when a job was lost, left undone or
// run twice, or the worker failed.
//
//   ./dev.sh bench noop_throughput [jobs] [rounds]   (defaults 20000, 3)

#include "bench/bench_support.hpp"
#include "bench/queue_drive.hpp"
#include "tests/support/test_db.hpp"

#include <cstdlib>

using namespace spool;

int main(int argc, char** argv) {
  int jobs = argc > 1 ? std::atoi(argv[1]) : 20'000;
  int rounds = argc > 2 ? std::atoi(argv[2]) : 3;
  std::printf("noop_throughput: %d jobs, simulate 0 ms, %d rounds\n", jobs, rounds);
  // Each pool size without a provider, then with every call behind a
  // provider whose limits are never reached: a cap only (as the seed's
  // video provider), then all four kinds (admission paid in full). The
  // three alternate within a round; medians over the rounds.
  const std::string providers[] = {
    "",
    R"("providers": [{"name": "api", "max_concurrent": 100000}], )",
    R"("providers": [{"name": "api", "max_concurrent": 100000, "rate": {"per_s": 100000,
      "burst": 100000}, "daily_quota": {"units": 1e9}, "breaker": {"consecutive_failures": 1000}}], )"};
  const char* names[] = {"", ", cap only", ", all four"};
  bool async_claim = false;
  {
    test::fresh_database db;
    async_claim = bench::queue::spool_claims_async(db.url());
  }
  for (int concurrency : {10, 32}) {
    std::vector<double> rate[3], busy_rate[3], ratio[3], ceiling, of_ceiling;
    for (int round = 0; round < rounds; ++round) {
      {
        // The raw ceiling at this batch size: a bare table claimed `concurrency`
        // at a time with a lease in one transaction, completed in another
        // (store_throughput's baseline, one claim and one record connection).
        test::fresh_database db;
        bench::queue::options opt;
        opt.runs = jobs;
        opt.supervisors = 1;
        ceiling.push_back(bench::queue::bare_rate(db.url(), concurrency, opt, async_claim).rate);
      }
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
        auto busy =
          conn.exec("SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 "
                    "FROM stage_attempts")
            .f64(0, 0);
        rate[kind].push_back(jobs / r.seconds);
        busy_rate[kind].push_back(jobs / busy);
        if (limited)
          ratio[kind].push_back(rate[kind].back() / rate[0].back());
        else
          of_ceiling.push_back(rate[0].back() / ceiling.back());
        bench::check_all_done_once(conn, jobs,
                                   ("concurrency " + std::to_string(concurrency) + names[kind])
                                     .c_str());
      }
      std::printf("  concurrency %2d round %d: %6.0f jobs/s (%.2f of the raw ceiling %6.0f); cap "
                  "only %6.0f (%.2f); all four %6.0f (%.2f)\n",
                  concurrency, round + 1, rate[0].back(), of_ceiling.back(), ceiling.back(),
                  rate[1].back(), ratio[1].back(), rate[2].back(), ratio[2].back());
      std::fflush(stdout);
    }
    for (int kind : {0, 1, 2}) {
      std::printf("concurrency %2d%-10s median %6.0f jobs/s start-to-exit, %6.0f first start "
                  "to last finish",
                  concurrency, names[kind], bench::percentile(rate[kind], 0.5),
                  bench::percentile(busy_rate[kind], 0.5));
      if (kind > 0)
        std::printf("; %.2f of without (median of the rounds' ratios; goal >= 0.8)",
                    bench::percentile(ratio[kind], 0.5));
      else
        std::printf("; raw ceiling %.0f runs/s, %.2f of it (median of the rounds' ratios; "
                    "goal >= 0.5)",
                    bench::percentile(ceiling, 0.5), bench::percentile(of_ceiling, 0.5));
      std::printf("\n");
    }
  }
  return bench::exit_status();
}
