#include "runtime/config/retry.hpp"

#include <limits>

#include <boost/json/parse.hpp>
#include <catch2/catch.hpp>

using namespace spool::config;
using spool::outcome_kind;
using std::chrono::milliseconds;
using action = retry_decision::action;

namespace {

retry_policy without_jitter() {
  retry_policy p;
  p.jitter = 0;
  return p;
}

} // namespace

TEST_CASE("with jitter 0 the default backoff is exactly 5 s, 15 s, 45 s, "
          "then the run fails",
          "[config][retry]") {
  auto policy = without_jitter();
  std::mt19937_64 rng{7};
  for (auto kind : {outcome_kind::transient, outcome_kind::timeout}) {
    INFO(spool::to_string(kind));
    CHECK(decide_retry(policy, kind, 1, 0, 0, rng)
          == retry_decision{action::retry_at, milliseconds{5000}, true});
    CHECK(decide_retry(policy, kind, 2, 0, 0, rng)
          == retry_decision{action::retry_at, milliseconds{15000}, true});
    CHECK(decide_retry(policy, kind, 3, 0, 0, rng)
          == retry_decision{action::retry_at, milliseconds{45000}, true});
    auto last = decide_retry(policy, kind, 4, 0, 0, rng);
    CHECK(last.act == action::fail);
    CHECK(last.delay == milliseconds{0});
    CHECK(last.counts_attempt);
    CHECK(last.reason
          == std::string(spool::to_string(kind))
               + " error: 4 counted failures, more than retry.max_retries 3");
  }
}

TEST_CASE("jitter keeps each delay within its fraction of the backoff",
          "[config][retry]") {
  retry_policy policy; // jitter 0.2
  std::mt19937_64 rng{42};
  bool varied = false;
  for (int i = 0; i < 500; ++i) {
    auto d = backoff(policy, 2, rng);
    CHECK(d >= milliseconds{12000});
    CHECK(d <= milliseconds{18000});
    varied = varied || d != milliseconds{15000};
  }
  CHECK(varied);
}

TEST_CASE("the same seed gives the same jittered delays", "[config][retry]") {
  retry_policy policy;
  std::mt19937_64 a{9};
  std::mt19937_64 b{9};
  for (int k = 1; k <= 5; ++k)
    CHECK(backoff(policy, k, a) == backoff(policy, k, b));
}

TEST_CASE("a backoff never exceeds max_delay_s, jitter included",
          "[config][retry]") {
  retry_policy policy;
  policy.max_delay_s = 60;
  policy.max_retries = 100;
  std::mt19937_64 rng{1};
  for (int k = 1; k <= 100; ++k)
    CHECK(backoff(policy, k, rng) <= milliseconds{60000});
  policy.jitter = 0;
  CHECK(backoff(policy, 4, rng) == milliseconds{60000});
  CHECK(backoff(policy, 100, rng) == milliseconds{60000});
  policy.base_s = 0;
  CHECK(backoff(policy, 100, rng) == milliseconds{0});
}

TEST_CASE("a network error is retried at once the first time, then backs off",
          "[config][retry]") {
  auto policy = without_jitter();
  std::mt19937_64 rng{1};
  CHECK(decide_retry(policy, outcome_kind::network, 1, 0, 0, rng)
        == retry_decision{action::retry_at, milliseconds{0}, true});
  CHECK(decide_retry(policy, outcome_kind::network, 2, 0, 0, rng)
        == retry_decision{action::retry_at, milliseconds{15000}, true});
  CHECK(decide_retry(policy, outcome_kind::network, 3, 0, 0, rng)
        == retry_decision{action::retry_at, milliseconds{45000}, true});
  CHECK(decide_retry(policy, outcome_kind::network, 4, 0, 0, rng).act
        == action::fail);
}

TEST_CASE("a network error after another failure is not retried at once",
          "[config][retry]") {
  auto policy = without_jitter();
  std::mt19937_64 rng{1};
  // A transient failure came first: this network error is the second one.
  CHECK(decide_retry(policy, outcome_kind::network, 2, 0, 0, rng).delay
        == milliseconds{15000});
}

TEST_CASE("a rate-limited error snoozes by its Retry-After and counts nothing",
          "[config][retry]") {
  auto policy = without_jitter();
  std::mt19937_64 rng{1};
  CHECK(decide_retry(policy, outcome_kind::rate_limited, 1, 12.5, 0, rng)
        == retry_decision{action::snooze, milliseconds{12500}, false});
  SECTION("without a Retry-After it snoozes for base_s") {
    CHECK(decide_retry(policy, outcome_kind::rate_limited, 1, 0, 0, rng)
          == retry_decision{action::snooze, milliseconds{5000}, false});
  }
  SECTION("it snoozes even when the attempts are used up") {
    CHECK(decide_retry(policy, outcome_kind::rate_limited, 50, 1, 0, rng)
          == retry_decision{action::snooze, milliseconds{1000}, false});
  }
}

TEST_CASE("a snooze is capped at max_snooze_s and says so",
          "[config][retry]") {
  auto policy = without_jitter();
  policy.max_snooze_s = 600;
  std::mt19937_64 rng{1};
  auto d = decide_retry(policy, outcome_kind::rate_limited, 1, 100000, 0, rng);
  CHECK(d.act == action::snooze);
  CHECK(d.delay == milliseconds{600000});
  CHECK_FALSE(d.counts_attempt);
  CHECK(d.reason == "Retry-After 100,000 s capped at retry.max_snooze_s 600");
  SECTION("exactly max_snooze_s is not capped") {
    auto at = decide_retry(policy, outcome_kind::rate_limited, 1, 600, 0, rng);
    CHECK(at == retry_decision{action::snooze, milliseconds{600000}, false});
  }
  SECTION("an infinite Retry-After is capped too") {
    auto inf = decide_retry(policy, outcome_kind::rate_limited, 1,
                            std::numeric_limits<double>::infinity(), 0, rng);
    CHECK(inf.delay == milliseconds{600000});
  }
  SECTION("base_s stands in for a missing Retry-After and is capped too") {
    policy.base_s = 900;
    auto base = decide_retry(policy, outcome_kind::rate_limited, 1, 0, 0, rng);
    CHECK(base.delay == milliseconds{600000});
    CHECK(base.reason == "retry.base_s 900 s capped at retry.max_snooze_s 600");
  }
  SECTION("a NaN or negative Retry-After means none") {
    auto nan = decide_retry(policy, outcome_kind::rate_limited, 1,
                            std::numeric_limits<double>::quiet_NaN(), 0, rng);
    CHECK(nan == retry_decision{action::snooze, milliseconds{5000}, false});
    auto neg = decide_retry(policy, outcome_kind::rate_limited, 1, -30, 0, rng);
    CHECK(neg == retry_decision{action::snooze, milliseconds{5000}, false});
  }
}

TEST_CASE("with the defaults one snooze lasts at most an hour",
          "[config][retry]") {
  retry_policy policy;
  std::mt19937_64 rng{1};
  CHECK(decide_retry(policy, outcome_kind::rate_limited, 1, 9.2e12, 0, rng)
          .delay
        == milliseconds{3600000});
}

TEST_CASE("a run that would pass max_snoozed_total_s fails instead of "
          "snoozing",
          "[config][retry]") {
  auto policy = without_jitter();
  policy.max_snoozed_total_s = 100;
  std::mt19937_64 rng{1};
  SECTION("a snooze that reaches the total exactly is allowed") {
    CHECK(decide_retry(policy, outcome_kind::rate_limited, 1, 30, 70, rng)
          == retry_decision{action::snooze, milliseconds{30000}, false});
  }
  SECTION("one that passes it fails the run without counting an attempt") {
    auto d = decide_retry(policy, outcome_kind::rate_limited, 1, 30, 70.5, rng);
    CHECK(d.act == action::fail);
    CHECK(d.delay == milliseconds{0});
    CHECK_FALSE(d.counts_attempt);
    CHECK(d.reason
          == "rate limited for a total of 70.5 s; a further 30 s snooze "
             "would exceed retry.max_snoozed_total_s 100");
  }
  SECTION("the capped snooze is what counts toward the total") {
    policy.max_snooze_s = 10;
    CHECK(decide_retry(policy, outcome_kind::rate_limited, 1, 3600, 90, rng)
            .act
          == action::snooze);
    CHECK(decide_retry(policy, outcome_kind::rate_limited, 1, 3600, 91, rng)
            .act
          == action::fail);
  }
  SECTION("a NaN or negative snoozed time counts as none") {
    CHECK(decide_retry(policy, outcome_kind::rate_limited, 1, 30,
                       std::numeric_limits<double>::quiet_NaN(), rng)
            .act
          == action::snooze);
    CHECK(decide_retry(policy, outcome_kind::rate_limited, 1, 30, -1e9, rng)
            .act
          == action::snooze);
  }
  SECTION("the default total is a day, written for people") {
    retry_policy defaults;
    auto d = decide_retry(defaults, outcome_kind::rate_limited, 1, 60, 86390,
                          rng);
    CHECK(d.act == action::fail);
    CHECK(d.reason
          == "rate limited for a total of 86,390 s; a further 60 s snooze "
             "would exceed retry.max_snoozed_total_s 86400");
  }
}

TEST_CASE("time spent snoozed does not affect other error classes",
          "[config][retry]") {
  auto policy = without_jitter();
  policy.max_snoozed_total_s = 1;
  std::mt19937_64 rng{1};
  CHECK(decide_retry(policy, outcome_kind::transient, 1, 0, 1e6, rng)
        == retry_decision{action::retry_at, milliseconds{5000}, true});
  CHECK(decide_retry(policy, outcome_kind::network, 1, 0, 1e6, rng)
        == retry_decision{action::retry_at, milliseconds{0}, true});
}

TEST_CASE("a permanent error fails at once", "[config][retry]") {
  retry_policy policy;
  std::mt19937_64 rng{1};
  CHECK(decide_retry(policy, outcome_kind::permanent, 1, 0, 0, rng)
        == retry_decision{action::fail, milliseconds{0}, true,
                          "permanent error: not retried"});
}

TEST_CASE("with max_retries 0 the first counted failure fails the run",
          "[config][retry]") {
  auto policy = without_jitter();
  policy.max_retries = 0;
  std::mt19937_64 rng{1};
  CHECK(decide_retry(policy, outcome_kind::transient, 1, 0, 0, rng).act
        == action::fail);
  CHECK(decide_retry(policy, outcome_kind::network, 1, 0, 0, rng).act
        == action::fail);
}

TEST_CASE("ok and cancelled are not failures and are never retried",
          "[config][retry]") {
  retry_policy policy;
  std::mt19937_64 rng{1};
  for (auto kind : {outcome_kind::ok, outcome_kind::cancelled})
    CHECK(decide_retry(policy, kind, 1, 0, 0, rng)
          == retry_decision{
            action::fail, milliseconds{0}, false,
            "not a failure (" + std::string(spool::to_string(kind)) + ")"});
}

TEST_CASE("the effective timeout scales by the payload's unit count",
          "[config][retry]") {
  stage_config stage;
  stage.timeout_s = 120;
  stage.timeout_per = "images";
  auto with = [&](const char* payload) {
    return effective_timeout(stage, boost::json::parse(payload).as_object());
  };
  CHECK(with(R"({"images": 4})") == milliseconds{480000});
  CHECK(with(R"({"images": 2.5})") == milliseconds{300000});
  SECTION("a missing, non-numeric or small count means one unit") {
    CHECK(with(R"({})") == milliseconds{120000});
    CHECK(with(R"({"images": "4"})") == milliseconds{120000});
    CHECK(with(R"({"images": 0})") == milliseconds{120000});
    CHECK(with(R"({"images": -3})") == milliseconds{120000});
    CHECK(with(R"({"images": 0.5})") == milliseconds{120000});
  }
  SECTION("without timeout_per the payload is ignored") {
    stage.timeout_per.clear();
    CHECK(with(R"({"images": 4})") == milliseconds{120000});
  }
  SECTION("a huge count is capped at timeout_max_s") {
    CHECK(with(R"({"images": 1e8})") == milliseconds{86400000});
    CHECK(with(R"({"images": 1e300})") == milliseconds{86400000});
    CHECK(with(R"({"images": 18446744073709551615})")
          == milliseconds{86400000});
    stage.timeout_max_s = 600;
    CHECK(with(R"({"images": 5})") == milliseconds{600000});
    CHECK(with(R"({"images": 4})") == milliseconds{480000});
  }
  SECTION("a non-finite count means one unit") {
    // JSON has no NaN or infinity literal; 1e400 parses as infinity.
    CHECK(with(R"({"images": 1e400})") == milliseconds{120000});
    CHECK(with(R"({"images": -1e400})") == milliseconds{120000});
  }
}
