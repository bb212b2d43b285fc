// claim_depth: does a claim get slower as the queue gets deeper? The median
// time of a 50-run claim with 1,000 ready runs against 1,000,000 ready runs,
// spread over 100 channels at one priority, each on a fresh database of the
// local cluster. The design says a claim's cost depends on its size and the
// number of active channels, never on the backlog: the ratio should stay
// near 1 (goal: <= 1.3).
//
// Each claim runs in a transaction that is rolled back, so the depth stays
// constant and every claim sees the same queue. The time measured is the
// claim call alone (one round trip), client side.
//
//   ./dev.sh bench claim_depth [deep] [claims] [rounds]
//   defaults: 1,000,000 deep, 200 claims of 50, 3 rounds (shallow and deep
//   alternate, so drift on this shared box hits both)

#include "runtime/pg/connection.hpp"
#include "runtime/store/store.hpp"
#include "tests/support/test_db.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
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

double percentile(std::vector<double> xs, double p) {
  std::sort(xs.begin(), xs.end());
  auto i = static_cast<size_t>(p * static_cast<double>(xs.size() - 1) + 0.5);
  return xs[std::min(i, xs.size() - 1)];
}

/// A fresh database with `depth` ready single-stage runs over 100 channels.
std::unique_ptr<test::fresh_database> make_queue(int depth) {
  auto db = std::make_unique<test::fresh_database>();
  pg::connection conn{db->url()};
  store::store q{conn};
  auto start = clock_type::now();
  for (int from = 0; from < depth; from += chunk) {
    std::vector<store::new_task> tasks(static_cast<size_t>(std::min(chunk, depth - from)));
    for (size_t i = 0; i < tasks.size(); ++i) {
      tasks[i].channel_id = "ch" + std::to_string((from + static_cast<int>(i)) % channels);
      tasks[i].payload = R"({"prompt":"a short video about queues"})";
    }
    q.enqueue(tasks, {{"s", {}, false, 3}});
  }
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
      std::fprintf(stderr, "ERROR: claimed %zu, expected %d\n", got.size(), claim_size);
      std::exit(1);
    }
    if (i >= 0)
      us.push_back(t);
  }
  return us;
}

} // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  int shallow = 1'000;
  int deep = argc > 1 ? std::atoi(argv[1]) : 1'000'000;
  int claims = argc > 2 ? std::atoi(argv[2]) : 200;
  int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  std::printf("claim_depth: %d claims of %d (rolled back) at %d vs %d ready runs, %d channels\n",
              claims, claim_size, shallow, deep, channels);
  auto small = make_queue(shallow);
  auto big = make_queue(deep);
  std::vector<double> all_small, all_big, ratios;
  for (int r = 0; r < rounds; ++r) {
    auto a = time_claims(small->url(), claims);
    auto b = time_claims(big->url(), claims);
    double ma = percentile(a, 0.5), mb = percentile(b, 0.5);
    std::printf("  round %d: median %6.0f us at %d, %6.0f us at %d (p90 %6.0f / %6.0f): "
                "ratio %.2f\n",
                r + 1, ma, shallow, mb, deep, percentile(a, 0.9), percentile(b, 0.9), mb / ma);
    std::fflush(stdout);
    all_small.insert(all_small.end(), a.begin(), a.end());
    all_big.insert(all_big.end(), b.begin(), b.end());
    ratios.push_back(mb / ma);
  }
  std::printf("median claim of %d: %.0f us at %d ready, %.0f us at %d ready; "
              "ratio %.2f (median of per-round ratios %.2f)\n",
              claim_size, percentile(all_small, 0.5), shallow, percentile(all_big, 0.5), deep,
              percentile(all_big, 0.5) / percentile(all_small, 0.5), percentile(ratios, 0.5));
}
