// claim_depth: does a claim get slower as the queue gets deeper? The median
// time of a 50-run claim with 1,000 ready runs against 1,000,000 ready runs,
// spread over 100 channels at one priority, each on a fresh database of the
// local cluster. The design says a claim's cost depends on its size and the
// number of active channels, never on the backlog: the ratio should stay
// near 1 (goal: <= 1.3).
//
// Two modes, each timing the claim call alone (one round trip), client side:
//
//  - rolled back: each claim runs in a transaction that is rolled back, so
//    the depth stays constant and every claim sees the same queue;
//  - committed: as in production, on one worker's connections. Each claim
//    commits, its 50 runs are completed (one record call, ok) and 50 new
//    videos are enqueued (another connection), so the depth stays constant
//    while the claim index fills with the dead entries of claimed and done
//    runs; autovacuum runs whenever PostgreSQL decides, as it would. Only the
//    claim is timed, not the record or the enqueue.
//
// Exits 1 when a claim returns fewer than 50 runs, a run is claimed twice or
// an outcome is refused.
//
//   ./dev.sh bench claim_depth [deep] [claims] [rounds]
//   defaults: 1,000,000 deep, 200 claims of 50 per round and mode, 3 rounds
//   (shallow and deep alternate, so drift on this shared box hits both)

#include "bench/bench_support.hpp"
#include "runtime/pg/connection.hpp"
#include "runtime/store/store.hpp"
#include "tests/support/test_db.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

using namespace spool;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr int claim_size = 50;
constexpr int channels = 100;
constexpr int chunk = 50'000;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// `n` videos of the one-stage pipeline, the first on channel `from` % 100.
std::vector<store::new_task> videos(int from, int n) {
  std::vector<store::new_task> tasks(static_cast<size_t>(n));
  for (size_t i = 0; i < tasks.size(); ++i) {
    tasks[i].channel_id = "ch" + std::to_string((from + static_cast<int>(i)) % channels);
    tasks[i].payload = R"({"prompt":"a short video about queues"})";
  }
  return tasks;
}

const std::vector<store::pipeline_stage> pipeline{{"s", {}, false, 3}};

/// A fresh database with `depth` ready single-stage runs over 100 channels.
std::unique_ptr<test::fresh_database> make_queue(int depth) {
  auto db = std::make_unique<test::fresh_database>();
  pg::connection conn{db->url()};
  store::store q{conn};
  auto start = clock_type::now();
  for (int from = 0; from < depth; from += chunk)
    q.enqueue(videos(from, std::min(chunk, depth - from)), pipeline);
  double enqueue_secs = seconds_since(start);
  conn.exec("VACUUM ANALYZE");
  std::printf("  %7d ready runs: enqueued in %.1f s (%.0f/s), vacuum analyze %.1f s\n", depth,
              enqueue_secs, depth / enqueue_secs, seconds_since(start) - enqueue_secs);
  return db;
}

/// Times `claims` claims of 50, each rolled back; returns the latencies (us).
std::vector<double> time_claims(const std::string& url, int claims) {
  pg::connection conn{url};
  store::store q{conn};
  std::vector<double> us;
  for (int i = -20; i < claims; ++i) { // the first 20 warm up caches and plans
    conn.exec("BEGIN");
    auto t0 = clock_type::now();
    auto got = q.claim("s", claim_size, "bench", 60s);
    double t = 1e6 * seconds_since(t0);
    conn.exec("ROLLBACK");
    if (got.size() != claim_size) {
      bench::error("claimed %zu, expected %d", got.size(), claim_size);
      std::exit(bench::exit_status());
    }
    if (i >= 0)
      us.push_back(t);
  }
  return us;
}

/// One worker's claim and record connections and a producer's connection
/// on one queue, kept across rounds (the claimer's session keeps its fair
/// order hints, as a worker's does).
struct committed_queue {
  explicit committed_queue(const std::string& url)
    : claim_conn(url), record_conn(url), producer(url) {
  }
  pg::connection claim_conn;
  pg::connection record_conn;
  pg::connection producer;
  std::unordered_set<int64_t> seen; // every run claimed so far
  int64_t claimed = 0;
  int64_t enqueued = 0;
};

/// Times `claims` committed claims of 50; each claim's runs are completed
/// and as many new videos enqueued, untimed. Returns the latencies (us).
std::vector<double> time_committed_claims(committed_queue& cq, int claims) {
  store::store claimer{cq.claim_conn};
  store::store recorder{cq.record_conn};
  store::store producer{cq.producer};
  std::vector<double> us;
  std::vector<store::outcome_record> outcomes;
  for (int i = -20; i < claims; ++i) {
    auto t0 = clock_type::now();
    auto got = claimer.claim("s", claim_size, "bench", 60s);
    double t = 1e6 * seconds_since(t0);
    if (got.size() != claim_size) {
      bench::error("committed claim %d returned %zu runs, expected %d", i + 20, got.size(),
                   claim_size);
      std::exit(bench::exit_status());
    }
    outcomes.clear();
    for (auto& r : got) {
      if (!cq.seen.insert(r.run_id).second || r.attempt != 1)
        bench::error("run %lld claimed a second time (attempt %d)",
                     static_cast<long long>(r.run_id), r.attempt);
      outcomes.push_back(store::outcome_record::for_claim(r, store::record_kind::ok));
    }
    cq.claimed += static_cast<int64_t>(got.size());
    for (auto& r : recorder.record("bench", outcomes))
      if (!r.accepted || r.state != "done")
        bench::error("the outcome of run %lld was refused (state %s)",
                     static_cast<long long>(r.run_id), r.state.c_str());
    producer.enqueue(videos(static_cast<int>(cq.enqueued), claim_size), pipeline);
    cq.enqueued += claim_size;
    if (i >= 0)
      us.push_back(t);
  }
  return us;
}

/// How many dead index entries of the claim index a claim may walk past: the
/// runs that left `ready` since the last vacuum, as PostgreSQL counts them.
std::string vacuum_state(const std::string& url) {
  pg::connection conn{url};
  auto r = conn.exec("SELECT n_dead_tup, n_live_tup, autovacuum_count FROM pg_stat_user_tables "
                     "WHERE relname = 'stage_runs'");
  if (r.rows() == 0)
    return "?";
  return std::to_string(r.i64(0, 0)) + " dead / " + std::to_string(r.i64(0, 1))
         + " live rows, " + std::to_string(r.i64(0, 2)) + " autovacuums";
}

/// Checks a queue after committed claims: what was claimed is done, once,
/// and the depth is what it was.
void check_committed(const std::string& url, const committed_queue& cq, int depth) {
  pg::connection conn{url};
  auto r = conn.exec("SELECT count(*) FILTER (WHERE state = 'done'), "
                     "count(*) FILTER (WHERE state = 'ready'), "
                     "count(*) FILTER (WHERE attempt > 1), "
                     "(SELECT count(*) FROM stage_attempts) FROM stage_runs");
  long long done = r.i64(0, 0), ready = r.i64(0, 1), again = r.i64(0, 2), attempts = r.i64(0, 3);
  if (done != cq.claimed)
    bench::error("at depth %d: %lld runs done, %lld claimed", depth, done,
                 static_cast<long long>(cq.claimed));
  if (ready != depth)
    bench::error("at depth %d: %lld runs ready afterwards", depth, ready);
  if (again != 0 || attempts != cq.claimed)
    bench::error("at depth %d: %lld runs claimed more than once (%lld attempts, %lld claims)",
                 depth, again, attempts, static_cast<long long>(cq.claimed));
}

struct mode_result {
  double small_median = 0, big_median = 0, pooled_ratio = 0, round_ratio = 0;
};

/// Runs `rounds` rounds of `timer` (latencies of claims on the deep queue
/// when given true, else the shallow one).
mode_result run_mode(const char* name, int rounds, int shallow, int deep,
                     const std::function<std::vector<double>(bool)>& timer) {
  std::vector<double> all_small, all_big, ratios;
  for (int r = 0; r < rounds; ++r) {
    auto a = timer(false);
    auto b = timer(true);
    double ma = bench::percentile(a, 0.5), mb = bench::percentile(b, 0.5);
    std::printf("  %s round %d: median %6.0f us at %d, %6.0f us at %d (p90 %6.0f / %6.0f): "
                "ratio %.2f\n",
                name, r + 1, ma, shallow, mb, deep, bench::percentile(a, 0.9),
                bench::percentile(b, 0.9), mb / ma);
    std::fflush(stdout);
    all_small.insert(all_small.end(), a.begin(), a.end());
    all_big.insert(all_big.end(), b.begin(), b.end());
    ratios.push_back(mb / ma);
  }
  mode_result m;
  m.small_median = bench::percentile(all_small, 0.5);
  m.big_median = bench::percentile(all_big, 0.5);
  m.pooled_ratio = m.big_median / m.small_median;
  m.round_ratio = bench::percentile(ratios, 0.5);
  return m;
}

} // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  int shallow = 1'000;
  int deep = argc > 1 ? std::atoi(argv[1]) : 1'000'000;
  int claims = argc > 2 ? std::atoi(argv[2]) : 200;
  int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  std::printf("claim_depth: %d claims of %d per round and mode at %d vs %d ready runs, "
              "%d channels\n",
              claims, claim_size, shallow, deep, channels);
  auto small = make_queue(shallow);
  auto big = make_queue(deep);

  auto rolled_back = run_mode("rolled back", rounds, shallow, deep, [&](bool is_deep) {
    return time_claims((is_deep ? big : small)->url(), claims);
  });

  committed_queue small_q{small->url()}, big_q{big->url()};
  auto committed = run_mode("committed  ", rounds, shallow, deep, [&](bool is_deep) {
    return time_committed_claims(is_deep ? big_q : small_q, claims);
  });
  check_committed(small->url(), small_q, shallow);
  check_committed(big->url(), big_q, deep);
  std::printf("  after the committed claims: at %d: %s; at %d: %s\n", shallow,
              vacuum_state(small->url()).c_str(), deep, vacuum_state(big->url()).c_str());

  auto report = [&](const char* name, const mode_result& m) {
    std::printf("%s: median claim of %d: %.0f us at %d ready, %.0f us at %d ready; "
                "ratio %.2f (median of per-round ratios %.2f)\n",
                name, claim_size, m.small_median, shallow, m.big_median, deep, m.pooled_ratio,
                m.round_ratio);
  };
  report("rolled back", rolled_back);
  report("committed  ", committed);
  return bench::exit_status();
}
