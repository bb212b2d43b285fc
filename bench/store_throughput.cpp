// store_throughput: single-stage runs through claim + batched complete, no
// executor, on a fresh database of the local cluster (fsync on), modelled on
// how a supervisor drives the queue:
//
//  - each supervisor (one worker id) has a claim connection that claims by
//    idle credit (10 or 32 runs per call) and a record connection that
//    flushes, in one call, every outcome that finished since its last flush
//    (at most 500); claiming goes on meanwhile;
//  - a supervisor holds at most 512 unrecorded outcomes: past that its
//    claimer waits for the recorder, as a pool's credit would.
//
// In the same run it measures a raw baseline, the ceiling of this design on
// this database: a bare table (state, attempt, lease owner and expiry) and
// the same supervisors (connections, threads, window, flush size), where a
// claim is one statement and one transaction,
//
//   UPDATE bare_jobs SET state, lease_owner, lease_expires_at, attempt + 1
//     FROM (SELECT id ... ORDER BY id LIMIT <credit> FOR UPDATE SKIP LOCKED)
//
// at the same batch size as Spool's claim (the credit), committed the way
// spool_claim commits (asynchronously when it does; the line says which),
// and a flush marks its runs done in a second transaction, fenced by
// (owner, attempt) like Spool's. What Spool does beyond it is its own cost:
// fair order across channels, attempt rows, task states and dependencies.
// Each round runs the baseline and Spool back to back on one fresh database;
// the medians over rounds and the ratio Spool / baseline are printed (compare
// ratios measured in one run: this box is shared and absolute numbers drift).
// Besides runs/s, each line shows the server CPU a run costs (read from
// /proc for the run's own backends, so other load on the box does not count;
// 10 ms ticks), split into the claim and the record connections, the client's
// CPU, call counts and latencies, and the WAL written per run.
//
// Each round also runs Spool behind a provider whose limits are never reached
// and behind a hard budget never reached (every run estimated at and costing
// 0.01 USD), each on a fresh database, and prints their ratio to Spool
// without.
//
// Exits 1 when a run is not done at the end, is claimed twice, or an outcome
// is refused, in either the baseline or Spool, or the budget variant's spend
// is not the sum of its runs' costs.
//
//   ./dev.sh bench store_throughput [runs] [supervisors] [rounds]
//   defaults: 20000 runs, 2 supervisors (4 connections), 5 rounds

#include "bench/queue_drive.hpp"
#include "runtime/store/providers.hpp"

#include <spdlog/spdlog.h>

#include <cmath>

using namespace spool;
using namespace spool::bench::queue;
using namespace std::chrono_literals;

namespace {

// -- Spool ---------------------------------------------------------------------

/// What stands in front of the claims.
enum class variant {
  plain,
  /// every claim goes through the admission of a provider whose limits
  /// (cap, rate, quota, breaker) are never reached
  provider,
  /// every run costs 0.01 USD (estimated and reported) against a hard
  /// budget never reached: each claim reserves, each outcome spends
  budget,
};

const char* name_of(variant v) {
  return v == variant::plain ? "no provider" : v == variant::provider ? "behind a provider"
                                                                      : "behind a budget";
}

spool_result spool_rate(const std::string& url, int credit, const options& opt,
                        variant v = variant::plain) {
  bool provider = v == variant::provider;
  bool budget = v == variant::budget;
  {
    pg::connection conn{url};
    store::store q{conn};
    q.sync_budgets(budget ? R"({"soft_usd": 0, "hard_usd": 10000000})"
                          : R"({"soft_usd": 0, "hard_usd": 0})");
    if (provider)
      q.sync_providers(R"([{"name": "api", "max_concurrent": 100000,
        "rate": {"per_s": 100000, "burst": 100000}, "daily_quota": {"units": 1e12},
        "breaker": {"consecutive_failures": 1000}}])");
    for (int from = 0; from < opt.runs; from += 50'000) {
      std::vector<store::new_task> tasks(static_cast<size_t>(std::min(50'000, opt.runs - from)));
      for (size_t i = 0; i < tasks.size(); ++i) {
        tasks[i].channel_id = "ch" + std::to_string((from + i) % 100);
        if (budget)
          tasks[i].run_estimates = {0.01};
      }
      q.enqueue(tasks, {{"s", {}, false, 3}});
    }
    conn.exec("VACUUM ANALYZE");
  }
  queue_ops ops;
  ops.claim = [provider](pg::connection& c, const std::string& worker, int n) {
    store::store q{c};
    std::vector<held> got;
    auto runs = provider ? q.claim_limited("s", n, worker, 60s, "api").runs
                         : q.claim("s", n, worker, 60s);
    for (auto& r : runs)
      got.push_back({r.run_id, r.attempt, r.lease_token});
    return got;
  };
  ops.record = [budget](pg::connection& c, const std::string& worker,
                        const std::vector<held>& batch) {
    store::store q{c};
    std::vector<store::outcome_record> outcomes;
    outcomes.reserve(batch.size());
    for (auto& h : batch) {
      store::outcome_record o;
      o.run_id = h.run_id;
      o.attempt = h.attempt;
      o.lease_token = h.lease_token;
      o.cost = budget ? 0.01 : 0;
      outcomes.push_back(std::move(o));
    }
    int refused = 0;
    for (auto& r : q.record(worker, outcomes))
      refused += r.accepted ? 0 : 1;
    return refused;
  };
  const char* profile = std::getenv("SPOOL_BENCH_PROFILE");
  if (profile != nullptr && *profile == '1') {
    pg::connection c{url};
    c.exec("SELECT pg_stat_reset()");
    c.exec("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET track_functions = ''all''', "
           "current_database()); END $$");
  }
  auto out = drive(url, credit, opt, ops, "spool");
  pg::connection conn{url};
  if (profile != nullptr && *profile == '1') {
    conn.exec("SELECT pg_stat_force_next_flush()");
    auto r = conn.exec("SELECT funcname, calls, round(self_time::numeric, 1), "
                       "round(total_time::numeric, 1) FROM pg_stat_user_functions "
                       "ORDER BY self_time DESC LIMIT 12");
    std::printf("    profile (%s): function, calls, self ms, total ms\n", name_of(v));
    for (int i = 0; i < r.rows(); ++i)
      std::printf("      %-32s %8s %10s %10s\n", r.str(i, 0).c_str(), r.str(i, 1).c_str(),
                  r.str(i, 2).c_str(), r.str(i, 3).c_str());
  }
  auto completed = conn.exec("SELECT count(*) FROM tasks WHERE state = 'completed'").i64(0, 0);
  if (completed != opt.runs)
    bench::error("spool: %lld of %d tasks completed", static_cast<long long>(completed),
                 opt.runs);
  bench::check_all_done_once(conn, opt.runs, "spool");
  if (budget) {
    double spent = conn.exec("SELECT spent::float8 FROM spool_money WHERE scope = 'total'")
                     .f64(0, 0);
    if (std::abs(spent - 0.01 * opt.runs) > 1e-6)
      bench::error("spool: %.2f USD spent, expected %.2f", spent, 0.01 * opt.runs);
  }
  return out;
}

} // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  options opt;
  if (argc > 1)
    opt.runs = std::atoi(argv[1]);
  if (argc > 2)
    opt.supervisors = std::atoi(argv[2]);
  if (argc > 3)
    opt.rounds = std::atoi(argv[3]);
  bool async_claim = false;
  {
    test::fresh_database db;
    async_claim = spool_claims_async(db.url());
  }
  std::printf("store_throughput: %d runs; %d supervisors (claim + record connection each), "
              "the same for the baseline; baseline claims (a batch of the credit, with a "
              "lease) commit %s, as spool_claim's do; %d rounds\n",
              opt.runs, opt.supervisors, async_claim ? "asynchronously" : "synchronously",
              opt.rounds);
  for (int credit : {10, 32}) {
    std::vector<double> bare, ours, ratios, bare_cpu, our_cpu, cpu_ratios, limited,
      limited_ratios, budgeted, budget_ratios;
    for (int round = 0; round < opt.rounds; ++round) {
      test::fresh_database db;
      auto b = bare_rate(db.url(), credit, opt, async_claim);
      auto s = spool_rate(db.url(), credit, opt);
      bare.push_back(b.rate);
      ours.push_back(s.rate);
      ratios.push_back(s.rate / b.rate);
      bare_cpu.push_back(b.server_us);
      our_cpu.push_back(s.server_us);
      cpu_ratios.push_back(s.server_us / b.server_us);
      std::printf("  credit %2d round %d: baseline %6.0f/s, spool %6.0f runs/s: ratio %.2f | "
                  "server cpu/run %4.1f us (claim %4.1f + record %4.1f) vs %4.1f us, "
                  "client %3.1f us | %.0f claims of %.0f us, %.0f records of %.0f runs in "
                  "%.0f us | baseline claims of %.0f us | machine busy %.0f%%, "
                  "WAL %.0f B/run\n",
                  credit, round + 1, b.rate, s.rate, s.rate / b.rate, s.server_us,
                  s.claim_cpu_us, s.record_cpu_us, b.server_us, s.client_us, s.claim_calls,
                  s.claim_us, s.record_calls, opt.runs / s.record_calls, s.record_us, b.claim_us,
                  s.cpu, s.wal_per_run);
      // The same runs behind a provider, then a budget, on fresh databases.
      auto behind = [&](variant v, const char* label, std::vector<double>& rates,
                        std::vector<double>& of_without) {
        test::fresh_database fresh;
        auto m = spool_rate(fresh.url(), credit, opt, v);
        rates.push_back(m.rate);
        of_without.push_back(m.rate / s.rate);
        std::printf("  credit %2d round %d: %s %6.0f runs/s, %.2f of without | server cpu/run "
                    "%4.1f us (claim %4.1f + record %4.1f) | %.0f claims of %.0f us, %.0f "
                    "records of %.0f runs in %.0f us\n",
                    credit, round + 1, label, m.rate, m.rate / s.rate, m.server_us,
                    m.claim_cpu_us, m.record_cpu_us, m.claim_calls, m.claim_us, m.record_calls,
                    opt.runs / m.record_calls, m.record_us);
      };
      behind(variant::provider, "behind a provider never limiting", limited, limited_ratios);
      behind(variant::budget, "behind a budget never reached", budgeted, budget_ratios);
      std::fflush(stdout);
    }
    std::printf("credit %2d median: baseline %6.0f/s, spool %6.0f runs/s, ratio %.2f; "
                "server cpu/run %.1f us vs %.1f us (x%.1f)\n",
                credit, median(bare), median(ours), median(ratios), median(our_cpu),
                median(bare_cpu), median(cpu_ratios));
    std::printf("credit %2d median behind a provider: %6.0f runs/s, %.2f of without (goal >= "
                "0.8)\n",
                credit, median(limited), median(limited_ratios));
    std::printf("credit %2d median behind a budget: %6.0f runs/s, %.2f of without (goal >= "
                "0.8)\n",
                credit, median(budgeted), median(budget_ratios));
  }
  return bench::exit_status();
}
