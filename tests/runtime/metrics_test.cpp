// The metrics registry and its Prometheus text exposition, checked by hand
// and by Prometheus's own promtool (Debian's prometheus package).

#include "runtime/metrics.hpp"
#include "tests/support/tools.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <thread>

using namespace spool::metrics;


TEST_CASE("counters, gauges and histograms render in the text exposition format",
          "[metrics]") {
  registry reg;
  auto& outcomes = reg.counters("spool_outcomes_total", "Outcomes recorded, by stage and kind.",
                                {"stage", "kind"});
  outcomes.with({"video_gen", "ok"}).inc();
  outcomes.with({"video_gen", "ok"}).inc(2);
  outcomes.with({"asset_gen", "retry"}).inc();
  outcomes.with({"asset_gen", "retry"}).inc(-5); // a counter never goes down
  reg.gauges("spool_in_flight", "Runs executing now.", {"stage"}).with({"sfx"}).set(4);
  auto& d = reg.histograms("video_gen_duration_seconds", "Seconds a video_gen call took.", {},
                           {0.5, 1, 10});
  d.with({}).observe(0.2);
  d.with({}).observe(1);
  d.with({}).observe(42);
  d.with({}).observe(std::nan(""));
  CHECK(reg.render()
        == "# HELP spool_in_flight Runs executing now.\n"
           "# TYPE spool_in_flight gauge\n"
           "spool_in_flight{stage=\"sfx\"} 4\n"
           "# HELP spool_outcomes_total Outcomes recorded, by stage and kind.\n"
           "# TYPE spool_outcomes_total counter\n"
           "spool_outcomes_total{stage=\"asset_gen\",kind=\"retry\"} 1\n"
           "spool_outcomes_total{stage=\"video_gen\",kind=\"ok\"} 3\n"
           "# HELP video_gen_duration_seconds Seconds a video_gen call took.\n"
           "# TYPE video_gen_duration_seconds histogram\n"
           "video_gen_duration_seconds_bucket{le=\"0.5\"} 1\n"
           "video_gen_duration_seconds_bucket{le=\"1\"} 2\n"
           "video_gen_duration_seconds_bucket{le=\"10\"} 2\n"
           "video_gen_duration_seconds_bucket{le=\"+Inf\"} 3\n"
           "video_gen_duration_seconds_sum 43.2\n"
           "video_gen_duration_seconds_count 3\n");
}

TEST_CASE("label values and help texts are escaped; odd numbers render as Prometheus reads them",
          "[metrics]") {
  registry reg;
  reg.counters("c_total", "a \\ b\nc", {"l"}).with({"q\"uote\\back\nline"}).inc();
  auto text = reg.render();
  CHECK(text.find("# HELP c_total a \\\\ b\\nc\n") != std::string::npos);
  CHECK(text.find("c_total{l=\"q\\\"uote\\\\back\\nline\"} 1\n") != std::string::npos);
  CHECK(format_value(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(format_value(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(format_value(std::nan("")) == "NaN");
  CHECK(format_value(0.1) == "0.1");
  CHECK(format_value(0.0005) == "0.0005");
  CHECK(std::stod(format_value(2.0 / 3)) == 2.0 / 3);
  CHECK(format_value(1e20) == "1e+20");
  CHECK(format_value(-3) == "-3");
}

TEST_CASE("bad names, labels and bounds are refused naming the problem", "[metrics]") {
  registry reg;
  CHECK_THROWS_WITH(reg.counters("9lives", "x"), Catch::Contains("metric name '9lives'"));
  CHECK_THROWS_WITH(reg.counters("a-b", "x"), Catch::Contains("must match"));
  CHECK_THROWS_WITH(reg.gauges("g", "x", {"__internal"}), Catch::Contains("__"));
  CHECK_THROWS_WITH(reg.gauges("g", "x", {"a:b"}), Catch::Contains("label name 'a:b'"));
  CHECK_THROWS_WITH(reg.histograms("h", "x", {"le"}), Catch::Contains("le is reserved"));
  CHECK_THROWS_WITH(reg.histograms("h", "x", {}, {1, 1}), Catch::Contains("increasing"));
  auto& c = reg.counters("c_total", "x", {"a"});
  CHECK(&reg.counters("c_total", "x", {"a"}) == &c); // declared again: the same family
  CHECK_THROWS_WITH(reg.gauges("c_total", "x", {"a"}), Catch::Contains("another kind"));
  CHECK_THROWS_WITH(reg.counters("c_total", "x", {"b"}), Catch::Contains("other labels"));
  CHECK_THROWS_WITH(c.with({}), Catch::Contains("0 label value(s) for 1 label(s)"));
}

TEST_CASE("concurrent updates are all counted", "[metrics]") {
  registry reg;
  auto& c = reg.counters("hits_total", "x", {"who"});
  auto& h = reg.histograms("lat_seconds", "x", {}, {0.5});
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&, t] {
      auto& mine = c.with({t % 2 == 0 ? "even" : "odd"});
      for (int i = 0; i < 10000; ++i) {
        mine.inc();
        h.with({}).observe(i % 2 == 0 ? 0.25 : 1);
      }
    });
  for (auto& t : ts)
    t.join();
  CHECK(c.with({"even"}).value() == 40000);
  CHECK(c.with({"odd"}).value() == 40000);
  auto r = h.with({}).read();
  CHECK(r.count == 80000);
  CHECK(r.cumulative.at(0) == 40000);
  CHECK(r.sum == Approx(40000 * 0.25 + 40000 * 1.0));
}

TEST_CASE("promtool accepts what the registry renders, and refuses a broken exposition",
          "[metrics]") {
  registry reg;
  reg.counters("replicate_api_errors_total", "Provider calls that failed, by provider.",
               {"provider"})
    .with({"kie_kling"})
    .inc(3);
  reg.counters("spool_cost_dollars_total", "USD reported by stage programs.").with({}).inc(12.5);
  reg.gauges("spool_tasks", "Tasks by state.", {"state"}).with({"running"}).set(7);
  auto& d = reg.histograms("spool_stage_duration_seconds", "Seconds a call took, by stage.",
                           {"stage"});
  for (double x : {0.003, 0.2, 4.0, 700.0})
    d.with({"asset_gen"}).observe(x);
  auto good = spool::test::promtool_check_metrics(reg.render());
  INFO(good.out);
  CHECK(good.exit_code == 0);
  // The same checker refuses a label value without quotes, and (lint) a
  // counter whose name lacks _total.
  auto bad = spool::test::promtool_check_metrics("# HELP a_total x\n# TYPE a_total counter\na_total{x=1} 1\n");
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.out, Catch::Contains("parsing error"));
  auto lint = spool::test::promtool_check_metrics("# HELP spent_dollars x\n# TYPE spent_dollars counter\n"
                             "spent_dollars 1\n");
  CHECK(lint.exit_code != 0);
  CHECK_THAT(lint.out, Catch::Contains("_total"));
}
