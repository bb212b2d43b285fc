// The simulate executor: deterministic draws, error rates and latency shape.

#include "runtime/exec/simulate.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <vector>

using spool::outcome_kind;
using spool::exec::simulate;
using spool::exec::simulate_settings;

namespace {

simulate_settings flaky() {
  simulate_settings s;
  s.latency = simulate_settings::dist::lognormal;
  s.p50_ms = 1000;
  s.p99_ms = 5000;
  s.p_transient = 0.10;
  s.p_network = 0.05;
  s.p_rate_limited = 0.05;
  s.p_permanent = 0.02;
  s.p_timeout = 0.03;
  s.retry_after_s = 7;
  s.cost = 0.25;
  s.seed = 42;
  return s;
}

} // namespace

TEST_CASE("the same seed, task, stage and attempt always give the same draw",
          "[exec][simulate]") {
  auto s = flaky();
  for (int64_t task = 1; task <= 200; ++task) {
    auto a = simulate(s, task, "video_gen", 2);
    auto b = simulate(s, task, "video_gen", 2);
    CHECK(a.latency == b.latency);
    CHECK(a.result.kind == b.result.kind);
    CHECK(a.result.output == b.result.output);
    CHECK(a.result.message == b.result.message);
  }
}

TEST_CASE("another attempt, stage or seed gives another draw",
          "[exec][simulate]") {
  auto s = flaky();
  auto base = simulate(s, 7, "narration", 1).latency;
  CHECK(simulate(s, 7, "narration", 2).latency != base);
  CHECK(simulate(s, 7, "sfx", 1).latency != base);
  CHECK(simulate(s, 8, "narration", 1).latency != base);
  s.seed = 43;
  CHECK(simulate(s, 7, "narration", 1).latency != base);
}

TEST_CASE("injected error rates match their probabilities over 20,000 draws",
          "[exec][simulate]") {
  auto s = flaky();
  std::map<outcome_kind, int> counts;
  constexpr int n = 20'000;
  for (int64_t task = 1; task <= n; ++task)
    ++counts[simulate(s, task, "asset_gen", 1).result.kind];
  auto rate = [&](outcome_kind k) { return counts[k] / double(n); };
  // Bounds of about 7 standard deviations: loose, never flaky.
  CHECK(rate(outcome_kind::transient) == Approx(0.10).margin(0.015));
  CHECK(rate(outcome_kind::network) == Approx(0.05).margin(0.012));
  CHECK(rate(outcome_kind::rate_limited) == Approx(0.05).margin(0.012));
  CHECK(rate(outcome_kind::permanent) == Approx(0.02).margin(0.008));
  CHECK(rate(outcome_kind::timeout) == Approx(0.03).margin(0.009));
  CHECK(rate(outcome_kind::ok) == Approx(0.75).margin(0.02));
  CHECK(counts[outcome_kind::cancelled] == 0);
}

TEST_CASE("an ok draw carries the cost and a JSON output, errors carry none",
          "[exec][simulate]") {
  auto s = flaky();
  bool saw_ok = false, saw_rate_limited = false, saw_transient = false;
  for (int64_t task = 1; task <= 500; ++task) {
    auto d = simulate(s, task, "upload", 1);
    auto& r = d.result;
    if (r.kind == outcome_kind::ok) {
      saw_ok = true;
      CHECK(r.cost == 0.25);
      CHECK(r.message.empty());
      auto v = boost::json::parse(r.output);
      REQUIRE(v.is_object());
      CHECK(v.at("simulated").as_bool());
      CHECK(v.at("latency_ms").to_number<double>()
            == Approx(d.latency.count() / 1000.0).margin(0.001));
    } else {
      CHECK(r.cost == 0);
      CHECK(r.output == "{}");
      CHECK(r.message == "simulated " + std::string{to_string(r.kind)}
                           + " error");
      if (r.kind == outcome_kind::rate_limited) {
        saw_rate_limited = true;
        CHECK(r.retry_after_s == 7);
      } else {
        CHECK(r.retry_after_s == 0);
      }
      saw_transient |= r.kind == outcome_kind::transient;
    }
  }
  CHECK(saw_ok);
  CHECK(saw_rate_limited);
  CHECK(saw_transient);
}

TEST_CASE("a lognormal latency has the configured median and 99th percentile",
          "[exec][simulate]") {
  auto s = flaky();
  std::vector<double> ms;
  for (int64_t task = 1; task <= 20'000; ++task)
    ms.push_back(simulate(s, task, "video_gen", 1).latency.count() / 1000.0);
  std::sort(ms.begin(), ms.end());
  CHECK(ms[ms.size() / 2] == Approx(1000).epsilon(0.05));
  CHECK(ms[ms.size() * 99 / 100] == Approx(5000).epsilon(0.15));
  CHECK(ms.front() > 0);
}

TEST_CASE("fixed and uniform latencies stay where they are configured",
          "[exec][simulate]") {
  simulate_settings s;
  s.fixed_ms = 12.5;
  CHECK(simulate(s, 1, "sfx", 1).latency == std::chrono::microseconds{12'500});

  s.latency = simulate_settings::dist::uniform;
  s.min_ms = 300; // given in the wrong order: swapped
  s.max_ms = 100;
  double lo = 1e9, hi = 0, sum = 0;
  for (int64_t task = 1; task <= 5'000; ++task) {
    double v = simulate(s, task, "sfx", 1).latency.count() / 1000.0;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    sum += v;
  }
  CHECK(lo >= 100);
  CHECK(hi <= 300);
  CHECK(sum / 5'000 == Approx(200).epsilon(0.05));
}

TEST_CASE("settings without latency or errors give an instant ok",
          "[exec][simulate]") {
  simulate_settings s;
  s.latency = simulate_settings::dist::lognormal; // p50 of 0: no latency
  auto d = simulate(s, 1, "assembly", 1);
  CHECK(d.latency.count() == 0);
  CHECK(d.result.kind == outcome_kind::ok);
  CHECK(d.result.cost == 0);
}
