#include "runtime/config/retry.hpp"

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
    CHECK(decide_retry(policy, kind, 1, 0, rng)
          == retry_decision{action::retry_at, milliseconds{5000}, true});
    CHECK(decide_retry(policy, kind, 2, 0, rng)
          == retry_decision{action::retry_at, milliseconds{15000}, true});
    CHECK(decide_retry(policy, kind, 3, 0, rng)
          == retry_decision{action::retry_at, milliseconds{45000}, true});
    CHECK(decide_retry(policy, kind, 4, 0, rng)
          == retry_decision{action::fail, milliseconds{0}, true});
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
  CHECK(decide_retry(policy, outcome_kind::network, 1, 0, rng)
        == retry_decision{action::retry_at, milliseconds{0}, true});
  CHECK(decide_retry(policy, outcome_kind::network, 2, 0, rng)
        == retry_decision{action::retry_at, milliseconds{15000}, true});
  CHECK(decide_retry(policy, outcome_kind::network, 3, 0, rng)
        == retry_decision{action::retry_at, milliseconds{45000}, true});
  CHECK(decide_retry(policy, outcome_kind::network, 4, 0, rng).act
        == action::fail);
}

TEST_CASE("a network error after another failure is not retried at once",
          "[config][retry]") {
  auto policy = without_jitter();
  std::mt19937_64 rng{1};
  // A transient failure came first: this network error is the second one.
  CHECK(decide_retry(policy, outcome_kind::network, 2, 0, rng).delay
        == milliseconds{15000});
}

TEST_CASE("a rate-limited error snoozes by its Retry-After and counts nothing",
          "[config][retry]") {
  auto policy = without_jitter();
  std::mt19937_64 rng{1};
  CHECK(decide_retry(policy, outcome_kind::rate_limited, 1, 12.5, rng)
        == retry_decision{action::snooze, milliseconds{12500}, false});
  SECTION("without a Retry-After it snoozes for base_s") {
    CHECK(decide_retry(policy, outcome_kind::rate_limited, 1, 0, rng)
          == retry_decision{action::snooze, milliseconds{5000}, false});
  }
  SECTION("it snoozes even when the attempts are used up") {
    CHECK(decide_retry(policy, outcome_kind::rate_limited, 50, 1, rng)
          == retry_decision{action::snooze, milliseconds{1000}, false});
  }
}

TEST_CASE("a permanent error fails at once", "[config][retry]") {
  retry_policy policy;
  std::mt19937_64 rng{1};
  CHECK(decide_retry(policy, outcome_kind::permanent, 1, 0, rng)
        == retry_decision{action::fail, milliseconds{0}, true});
}

TEST_CASE("with max_retries 0 the first counted failure fails the run",
          "[config][retry]") {
  auto policy = without_jitter();
  policy.max_retries = 0;
  std::mt19937_64 rng{1};
  CHECK(decide_retry(policy, outcome_kind::transient, 1, 0, rng).act
        == action::fail);
  CHECK(decide_retry(policy, outcome_kind::network, 1, 0, rng).act
        == action::fail);
}

TEST_CASE("ok and cancelled are not failures and are never retried",
          "[config][retry]") {
  retry_policy policy;
  std::mt19937_64 rng{1};
  for (auto kind : {outcome_kind::ok, outcome_kind::cancelled})
    CHECK(decide_retry(policy, kind, 1, 0, rng)
          == retry_decision{action::fail, milliseconds{0}, false});
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
  SECTION("a huge count saturates instead of overflowing") {
    CHECK(with(R"({"images": 1e300})") == milliseconds::max());
  }
}
