// Providers in the configuration: parsing, defaults, validation, a stage's
// provider and fallback, canonical JSON and diff
// (runtime/config/config.hpp).

#include "runtime/config/config.hpp"

#include <algorithm>
#include <set>
#include <string>

#include <boost/json.hpp>
#include "tests/support/config_parse.hpp"

#include <catch2/catch.hpp>

using namespace spool::config;
using spool::test::all_problems;
using spool::test::parse_bad;
using spool::test::parse_ok;
using spool::test::render;
using names = std::vector<std::string>;

namespace {

/// A file with `providers` (JSON text of the array) and one stage "gen" with
/// `stage` (JSON text of extra stage keys, without braces).
std::string file(std::string_view providers, std::string_view stage = "") {
  std::string out = R"({"providers": )";
  out += providers;
  out += R"(, "stages": [{"name": "gen")";
  if (!stage.empty()) {
    out += ", ";
    out += stage;
  }
  out += "}]}";
  return out;
}

/// A file with one provider "p" that has `keys` (JSON text, without
/// braces) besides its name.
std::string provider_file(std::string_view keys) {
  return file(R"([{"name": "p", )" + std::string(keys) + "}]");
}

provider_config& provider_of(snapshot& s, std::string_view name) {
  auto it = std::find_if(s.providers.begin(), s.providers.end(),
                         [&](const auto& p) { return p.name == name; });
  REQUIRE(it != s.providers.end());
  return *it;
}

/// Two providers, kling and runway, and a stage that uses kling with runway
/// as its fallback.
constexpr const char* two_providers = R"({
  "providers": [
    {"name": "kling", "max_concurrent": 3,
     "rate": {"per_s": 2, "burst": 4},
     "breaker": {"consecutive_failures": 5, "cooldown_s": 30}},
    {"name": "runway"}
  ],
  "stages": [
    {"name": "video_gen", "provider": "kling",
     "fallback": {"provider": "runway"}}
  ]
})";

} // namespace

// -- parsing ------------------------------------------------------------------

TEST_CASE("every key of a provider is read into the snapshot",
          "[config][providers]") {
  auto s = parse_ok(R"({
    "providers": [
      {"name": "kling", "max_concurrent": 3,
       "rate": {"per_s": 2, "burst": 4},
       "daily_quota": {"units": 500, "reset_at": "07:30",
                       "time_zone": "America/Los_Angeles", "window_s": 3600,
                       "units_per_call": 2.5, "units_field": "images"},
       "breaker": {"consecutive_failures": 7, "failure_rate": 0.5,
                   "window": 40, "cooldown_s": 12.5, "probes": 2}},
      {"name": "runway"}
    ],
    "stages": [
      {"name": "video_gen", "provider": "kling",
       "executor": {"kind": "command", "argv": ["bin/video"]},
       "fallback": {"provider": "runway",
                    "executor": {"kind": "command",
                                 "argv": ["bin/video", "--model", "gen3"],
                                 "env": {"MODEL": "gen3"},
                                 "pass_env": ["RUNWAY_API_KEY"],
                                 "kill_grace_s": 2}}}
    ]
  })");
  REQUIRE(s->providers.size() == 2);
  const auto* k = s->provider("kling");
  REQUIRE(k != nullptr);
  CHECK(k == &s->providers[0]);
  CHECK(k->name == "kling");
  CHECK(k->max_concurrent == 3);
  CHECK(k->has_rate);
  CHECK(k->rate == rate_limit{2, 4});
  CHECK(k->has_quota);
  CHECK(k->quota.units == 500);
  CHECK(k->quota.reset_at == "07:30");
  CHECK(k->quota.time_zone == "America/Los_Angeles");
  CHECK(k->quota.window_s == 3600);
  CHECK(k->quota.units_per_call == 2.5);
  CHECK(k->quota.units_field == "images");
  CHECK(k->has_breaker);
  CHECK(k->breaker == breaker_config{7, 0.5, 40, 12.5, 2});
  CHECK(s->provider("runway") == &s->providers[1]);
  CHECK(s->provider("nope") == nullptr);

  const auto& st = s->stages[0];
  CHECK(st.provider == "kling");
  CHECK(st.fallback_provider == "runway");
  CHECK(st.fallback_executor.kind == executor_kind::command);
  CHECK(st.fallback_executor.command.argv
        == names{"bin/video", "--model", "gen3"});
  CHECK(st.fallback_executor.command.env
        == std::map<std::string, std::string>{{"MODEL", "gen3"}});
  CHECK(st.fallback_executor.command.pass_env == names{"RUNWAY_API_KEY"});
  CHECK(st.fallback_executor.command.kill_grace_s == 2);
  CHECK(st.executor.command.argv == names{"bin/video"});
}

TEST_CASE("a provider's missing keys take their defaults",
          "[config][providers]") {
  auto s = parse_ok(R"({
    "providers": [
      {"name": "bare"},
      {"name": "full", "rate": {"per_s": 3}, "daily_quota": {"units": 9},
       "breaker": {}}
    ],
    "stages": [{"name": "a"}]
  })");
  const auto& bare = s->providers[0];
  CHECK(bare.max_concurrent == 0);
  CHECK_FALSE(bare.has_rate);
  CHECK_FALSE(bare.has_quota);
  CHECK_FALSE(bare.has_breaker);
  const auto& full = s->providers[1];
  CHECK(full.has_rate);
  CHECK(full.rate.per_s == 3);
  CHECK(full.rate.burst == 1);
  CHECK(full.has_quota);
  CHECK(full.quota.units == 9);
  CHECK(full.quota.reset_at == "00:00");
  CHECK(full.quota.time_zone == "UTC");
  CHECK(full.quota.window_s == 86400);
  CHECK(full.quota.units_per_call == 1);
  CHECK(full.quota.units_field.empty());
  CHECK(full.has_breaker);
  CHECK(full.breaker.consecutive_failures == 5);
  CHECK(full.breaker.failure_rate == 0);
  CHECK(full.breaker.window == 20);
  CHECK(full.breaker.cooldown_s == 30);
  CHECK(full.breaker.probes == 1);
  // No providers at all, and a stage that names none.
  auto none = parse_ok(R"({"stages": [{"name": "a"}]})");
  CHECK(none->providers.empty());
  CHECK(none->stages[0].provider.empty());
  CHECK(none->stages[0].fallback_provider.empty());
}

TEST_CASE("provider defaults of the registry agree with the plain structs",
          "[config][providers]") {
  snapshot expected;
  provider_config bare;
  bare.name = "bare";
  expected.providers.push_back(bare);
  provider_config full;
  full.name = "full";
  full.has_rate = true;
  full.rate.per_s = 1; // required: the struct's value, written out
  full.has_quota = true;
  full.quota.units = 10;
  full.has_breaker = true;
  expected.providers.push_back(full);
  stage_config a;
  a.name = "a";
  expected.stages.push_back(a);
  auto parsed = parse_ok(R"({
    "providers": [
      {"name": "bare"},
      {"name": "full", "rate": {"per_s": 1}, "daily_quota": {"units": 10},
       "breaker": {}}
    ],
    "stages": [{"name": "a"}]
  })");
  CHECK(*parsed == expected);
  // Settings of an absent object keep their struct defaults.
  CHECK(parsed->providers[0].rate == rate_limit{});
  CHECK(parsed->providers[0].quota == daily_quota{});
  CHECK(parsed->providers[0].breaker == breaker_config{});
}

// -- validation ---------------------------------------------------------------

TEST_CASE("a rate needs per_s and a daily quota needs units",
          "[config][providers]") {
  auto r = parse_bad(provider_file(R"("rate": {"burst": 4},
                                      "daily_quota": {"reset_at": "01:00"})"));
  CHECK_PROBLEM(r, "providers[0].rate.per_s", "missing required key");
  CHECK_PROBLEM(r, "providers[0].daily_quota.units", "missing required key");
  CHECK(r.problems.size() == 2);
  // Without the objects nothing is required.
  parse_ok(provider_file(R"("max_concurrent": 1)"));
  // An object that is not one is reported once, as such.
  auto wrong = parse_bad(provider_file(R"("rate": 5)"));
  CHECK_PROBLEM(wrong, "providers[0].rate", "must be an object, got 5");
  CHECK(wrong.problems.size() == 1);
}

TEST_CASE("provider values out of bounds are reported with their path",
          "[config][providers]") {
  auto low = parse_bad(file(R"([{"name": "p", "max_concurrent": -1,
    "rate": {"per_s": 0, "burst": 0.5},
    "daily_quota": {"units": 0, "window_s": 0.5, "units_per_call": 0},
    "breaker": {"consecutive_failures": 0, "failure_rate": -0.1,
                "window": 0, "cooldown_s": 0, "probes": 0}}])"));
  CHECK_PROBLEM(low, "providers[0].max_concurrent", "must be >= 0, got -1");
  CHECK_PROBLEM(low, "providers[0].rate.per_s", "must be > 0, got 0");
  CHECK_PROBLEM(low, "providers[0].rate.burst", "must be >= 1, got 0.5");
  CHECK_PROBLEM(low, "providers[0].daily_quota.units", "must be > 0, got 0");
  CHECK_PROBLEM(low, "providers[0].daily_quota.window_s",
                "must be >= 1, got 0.5");
  CHECK_PROBLEM(low, "providers[0].daily_quota.units_per_call",
                "must be > 0, got 0");
  CHECK_PROBLEM(low, "providers[0].breaker.consecutive_failures",
                "must be >= 1, got 0");
  CHECK_PROBLEM(low, "providers[0].breaker.failure_rate",
                "must be >= 0, got -0.1");
  CHECK_PROBLEM(low, "providers[0].breaker.window", "must be >= 1, got 0");
  CHECK_PROBLEM(low, "providers[0].breaker.cooldown_s",
                "must be >= 0.01, got 0");
  CHECK_PROBLEM(low, "providers[0].breaker.probes", "must be >= 1, got 0");
  CHECK(low.problems.size() == 11);

  auto high = parse_bad(file(R"([{"name": "p", "max_concurrent": 100001,
    "rate": {"per_s": 100001, "burst": 100001},
    "daily_quota": {"units": 1e13, "window_s": 2678401,
                    "units_per_call": 1000001},
    "breaker": {"consecutive_failures": 1001, "failure_rate": 1.5,
                "window": 1001, "cooldown_s": 86401, "probes": 101}}])"));
  CHECK_PROBLEM(high, "providers[0].max_concurrent",
                "must be <= 100000, got 100001");
  CHECK_PROBLEM(high, "providers[0].rate.per_s", "must be <= 100000");
  CHECK_PROBLEM(high, "providers[0].rate.burst", "must be <= 100000");
  CHECK_PROBLEM(high, "providers[0].daily_quota.units",
                "must be <= 1000000000000");
  CHECK_PROBLEM(high, "providers[0].daily_quota.window_s",
                "must be <= 2678400");
  CHECK_PROBLEM(high, "providers[0].daily_quota.units_per_call",
                "must be <= 1000000");
  CHECK_PROBLEM(high, "providers[0].breaker.consecutive_failures",
                "must be <= 1000");
  CHECK_PROBLEM(high, "providers[0].breaker.failure_rate", "must be <= 1");
  CHECK_PROBLEM(high, "providers[0].breaker.window", "must be <= 1000");
  CHECK_PROBLEM(high, "providers[0].breaker.cooldown_s", "must be <= 86400");
  CHECK_PROBLEM(high, "providers[0].breaker.probes", "must be <= 100");
  CHECK(high.problems.size() == 11);

  auto types = parse_bad(file(R"([{"name": "p", "max_concurrent": 1.5,
    "breaker": {"probes": "one"}}])"));
  CHECK_PROBLEM(types, "providers[0].max_concurrent",
                "must be an integer, got 1.5");
  CHECK_PROBLEM(types, "providers[0].breaker.probes",
                "must be an integer, got 'one'");
}

TEST_CASE("the bounds of provider values themselves are accepted",
          "[config][providers]") {
  auto low = parse_ok(file(R"([{"name": "p", "max_concurrent": 0,
    "rate": {"per_s": 0.001, "burst": 1},
    "daily_quota": {"units": 0.5, "window_s": 1, "units_per_call": 0.01,
                    "reset_at": "00:00"},
    "breaker": {"consecutive_failures": 1, "failure_rate": 0,
                "window": 1, "cooldown_s": 0.01, "probes": 1}}])"));
  CHECK(low->providers[0].breaker.cooldown_s == 0.01);
  auto high = parse_ok(file(R"([{"name": "p", "max_concurrent": 100000,
    "rate": {"per_s": 100000, "burst": 100000},
    "daily_quota": {"units": 1e12, "window_s": 2678400,
                    "units_per_call": 1e6, "reset_at": "23:59"},
    "breaker": {"consecutive_failures": 1000, "failure_rate": 1,
                "window": 1000, "cooldown_s": 86400, "probes": 100}}])"));
  CHECK(high->providers[0].quota.units == 1e12);
}

TEST_CASE("a provider name is a lower_snake identifier, given once",
          "[config][providers]") {
  auto r = parse_bad(file(R"([
    {"name": "kling"}, {"name": "Kling"}, {"name": "kling"},
    {"name": "9lives"}, {"max_concurrent": 1}, "runway"
  ])"));
  CHECK_PROBLEM(r, "providers[1].name",
                "must match [a-z][a-z0-9_]{0,62}, got 'Kling'");
  CHECK_PROBLEM(r, "providers[2].name",
                "duplicate provider name 'kling' (first at providers[0])");
  CHECK_PROBLEM(r, "providers[3].name", "must match [a-z][a-z0-9_]{0,62}");
  CHECK_PROBLEM(r, "providers[4].name", "missing required key");
  CHECK_PROBLEM(r, "providers[5]", "must be an object, got 'runway'");
  CHECK(r.problems.size() == 5);
  auto not_a_list = parse_bad(file(R"({"name": "kling"})"));
  CHECK_PROBLEM(not_a_list, "providers",
                "must be an array of providers, got an object");
  // A stage and a provider may share a name: they live apart.
  parse_ok(R"({"providers": [{"name": "tts"}],
               "stages": [{"name": "tts", "provider": "tts"}]})");
}

TEST_CASE("a quota's reset time is HH:MM within a day", "[config][providers]") {
  for (auto ok : {"00:00", "07:05", "23:59", "12:00"}) {
    INFO(ok);
    auto s = parse_ok(provider_file(
      R"("daily_quota": {"units": 1, "reset_at": ")" + std::string(ok)
      + R"("})"));
    CHECK(s->providers[0].quota.reset_at == ok);
  }
  for (auto bad : {"24:00", "12:60", "7:00", "07:5", "0700", "07:00:00",
                   "noon", "", " 7:00", "07-00"}) {
    INFO(bad);
    auto r = parse_bad(provider_file(
      R"("daily_quota": {"units": 1, "reset_at": ")" + std::string(bad)
      + R"("})"));
    CHECK_PROBLEM(r, "providers[0].daily_quota.reset_at",
                  "must be a time of day HH:MM (00:00..23:59), got '"
                    + std::string(bad) + "'");
  }
}

TEST_CASE("a quota's time zone is a non-empty name of zone characters",
          "[config][providers]") {
  for (auto ok : {"UTC", "America/Los_Angeles", "Etc/GMT+8", "Etc/GMT-14",
                  "America/Argentina/Buenos_Aires"}) {
    INFO(ok);
    auto s = parse_ok(provider_file(
      R"("daily_quota": {"units": 1, "time_zone": ")" + std::string(ok)
      + R"("})"));
    CHECK(s->providers[0].quota.time_zone == ok);
  }
  auto empty = parse_bad(
    provider_file(R"("daily_quota": {"units": 1, "time_zone": ""})"));
  CHECK_PROBLEM(empty, "providers[0].daily_quota.time_zone",
                "must not be empty");
  for (auto bad : {"America/Los Angeles", "UTC;DROP", "Europe/Zürich",
                   "'UTC'"}) {
    INFO(bad);
    auto r = parse_bad(provider_file(
      R"("daily_quota": {"units": 1, "time_zone": ")" + std::string(bad)
      + R"("})"));
    CHECK_PROBLEM(r, "providers[0].daily_quota.time_zone",
                  "must be a time zone name made of [A-Za-z0-9_+/-]");
  }
}

TEST_CASE("a quota's units field is empty or a field name",
          "[config][providers]") {
  for (auto ok : {"", "images", "numImages", "_n", "seconds_of_video"}) {
    INFO(ok);
    parse_ok(provider_file(R"("daily_quota": {"units": 1, "units_field": ")"
                           + std::string(ok) + R"("})"));
  }
  for (auto bad : {"1images", "num images", "a.b", "images[0]"}) {
    INFO(bad);
    auto r = parse_bad(provider_file(
      R"("daily_quota": {"units": 1, "units_field": ")" + std::string(bad)
      + R"("})"));
    CHECK_PROBLEM(r, "providers[0].daily_quota.units_field",
                  "must be empty or match [A-Za-z_][A-Za-z0-9_]{0,62}, got '"
                    + std::string(bad) + "'");
  }
}

TEST_CASE("an unknown key in a provider is reported with a suggestion",
          "[config][providers]") {
  auto r = parse_bad(provider_file(R"("max_concurent": 3,
    "rate": {"per_sec": 2}, "breaker": {"cooldown": 5}, "quota": {})"));
  CHECK_PROBLEM(r, "providers[0].max_concurent",
                "unknown key (did you mean 'max_concurrent'?)");
  CHECK_PROBLEM(r, "providers[0].rate.per_sec",
                "unknown key (did you mean 'per_s'?)");
  CHECK_PROBLEM(r, "providers[0].breaker.cooldown",
                "unknown key (did you mean 'cooldown_s'?)");
  CHECK_PROBLEM(r, "providers[0].quota", "unknown key");
}

// -- a stage's provider and fallback ------------------------------------------

TEST_CASE("a stage naming an unknown provider is reported with a suggestion",
          "[config][providers]") {
  auto typo = parse_bad(file(R"([{"name": "kling"}, {"name": "runway"}])",
                             R"("provider": "klign")"));
  CHECK_PROBLEM(typo, "stages[0].provider",
                "unknown provider 'klign' (did you mean 'kling'?)");
  CHECK(typo.problems.size() == 1);
  auto far = parse_bad(file(R"([{"name": "kling"}])",
                            R"("provider": "elevenlabs")"));
  CHECK_PROBLEM(far, "stages[0].provider", "unknown provider 'elevenlabs'");
  CHECK(far.problems[0].message.find("did you mean") == std::string::npos);
  auto none = parse_bad(R"({"stages": [{"name": "a", "provider": "kling"}]})");
  CHECK_PROBLEM(none, "stages[0].provider",
                "unknown provider 'kling' (providers lists none)");
  auto fallback = parse_bad(file(R"([{"name": "kling"}, {"name": "runway"}])",
                                 R"("provider": "kling",
                                    "fallback": {"provider": "runaway"})"));
  CHECK_PROBLEM(fallback, "stages[0].fallback.provider",
                "unknown provider 'runaway' (did you mean 'runway'?)");
  CHECK(fallback.problems.size() == 1);
}

TEST_CASE("a fallback needs the stage's provider and names another one",
          "[config][providers]") {
  const auto* providers = R"([{"name": "kling"}, {"name": "runway"}])";
  auto no_provider =
    parse_bad(file(providers, R"("fallback": {"provider": "runway"})"));
  CHECK_PROBLEM(no_provider, "stages[0].fallback", "needs provider");
  CHECK(no_provider.problems.size() == 1);
  auto same = parse_bad(file(providers, R"("provider": "kling",
                                          "fallback": {"provider": "kling"})"));
  CHECK_PROBLEM(same, "stages[0].fallback.provider",
                "must differ from provider ('kling')");
  CHECK(same.problems.size() == 1);
  auto missing = parse_bad(file(providers, R"("provider": "kling",
    "fallback": {"executor": {"kind": "command", "argv": ["x"]}})"));
  CHECK_PROBLEM(missing, "stages[0].fallback.provider",
                "missing required key");
  CHECK(missing.problems.size() == 1);
  auto not_object =
    parse_bad(file(providers, R"("provider": "kling", "fallback": "runway")"));
  CHECK_PROBLEM(not_object, "stages[0].fallback",
                "must be an object, got 'runway'");
  CHECK(not_object.problems.size() == 1);
  auto ok = parse_ok(file(providers, R"("provider": "kling",
                                        "fallback": {"provider": "runway"})"));
  CHECK(ok->stages[0].fallback_provider == "runway");
}

TEST_CASE("a fallback without an executor runs the stage's executor",
          "[config][providers]") {
  const auto* providers = R"([{"name": "kling"}, {"name": "runway"}])";
  auto copied = parse_ok(file(providers, R"("provider": "kling",
    "executor": {"kind": "command", "argv": ["bin/video"],
                 "kill_grace_s": 1, "env": {"A": "b"}},
    "fallback": {"provider": "runway"})"));
  const auto& st = copied->stages[0];
  CHECK(st.fallback_executor == st.executor);
  CHECK(st.fallback_executor.command.argv == names{"bin/video"});

  // A given executor takes its own defaults, not the stage executor's
  // values.
  auto own = parse_ok(file(providers, R"("provider": "kling",
    "executor": {"kind": "command", "argv": ["bin/video"],
                 "kill_grace_s": 1},
    "fallback": {"provider": "runway",
                 "executor": {"kind": "command", "argv": ["bin/gen3"]}})"));
  CHECK(own->stages[0].fallback_executor.command.argv == names{"bin/gen3"});
  CHECK(own->stages[0].fallback_executor.command.kill_grace_s == 5);
  auto empty = parse_ok(file(providers, R"("provider": "kling",
    "executor": {"kind": "command", "argv": ["bin/video"]},
    "fallback": {"provider": "runway", "executor": {}})"));
  CHECK(empty->stages[0].fallback_executor == executor_config{});

  // Without a fallback, fallback_executor keeps its struct defaults.
  auto none = parse_ok(file(providers, R"("provider": "kling",
    "executor": {"kind": "command", "argv": ["bin/video"]})"));
  CHECK(none->stages[0].fallback_executor == executor_config{});
}

TEST_CASE("a fallback executor follows the rules of executor",
          "[config][providers]") {
  const auto* providers = R"([{"name": "kling"}, {"name": "runway"}])";
  auto r = parse_bad(file(providers, R"("provider": "kling",
    "max_cost": 1,
    "fallback": {"provider": "runway", "executor": {
      "kind": "simulate", "argv": ["x"], "cost": 2,
      "latency": {"dist": "lognormal", "p50_ms": 500, "p99_ms": 100},
      "errors": {"transient": 0.6, "timeout": 0.6}, "retry_after_s": -1,
      "colour": "red"}})"));
  CHECK_PROBLEM(r, "stages[0].fallback.executor.argv",
                "only valid when fallback.executor.kind is 'command'");
  CHECK_PROBLEM(r, "stages[0].fallback.executor.cost",
                "must be <= max_cost (1), got 2");
  CHECK_PROBLEM(r, "stages[0].fallback.executor.latency.p99_ms",
                "must be >= p50_ms (500), got 100");
  CHECK_PROBLEM(r, "stages[0].fallback.executor.errors",
                "probabilities must sum to <= 1, got 1.2");
  CHECK_PROBLEM(r, "stages[0].fallback.executor.retry_after_s",
                "must be >= 0, got -1");
  CHECK_PROBLEM(r, "stages[0].fallback.executor.colour", "unknown key");
  CHECK(r.problems.size() == 6);

  auto no_argv = parse_bad(file(providers, R"("provider": "kling",
    "fallback": {"provider": "runway", "executor": {"kind": "command"}})"));
  CHECK_PROBLEM(no_argv, "stages[0].fallback.executor.argv",
                "missing required key");
  auto bad_kind = parse_bad(file(providers, R"("provider": "kling",
    "fallback": {"provider": "runway", "executor": {"kind": "http"}})"));
  CHECK_PROBLEM(bad_kind, "stages[0].fallback.executor.kind",
                "must be one of 'simulate', 'command', got 'http'");

  // A copy of a broken executor is reported once, at executor.
  auto copy = parse_bad(file(providers, R"("provider": "kling",
    "max_cost": 1, "executor": {"cost": 2},
    "fallback": {"provider": "runway"})"));
  CHECK_PROBLEM(copy, "stages[0].executor.cost", "must be <= max_cost");
  CHECK(copy.problems.size() == 1);
}

TEST_CASE("the executor keys are declared alike for executor and "
          "fallback.executor",
          "[config][providers]") {
  names executor_keys;
  std::vector<property_info> executor;
  std::vector<property_info> fallback;
  for (const auto& p : describe()) {
    const std::string ex = "stages[].executor";
    const std::string fb = "stages[].fallback.executor";
    if (p.name.rfind(ex, 0) == 0)
      executor.push_back(p);
    else if (p.name.rfind(fb, 0) == 0)
      fallback.push_back(p);
  }
  REQUIRE(executor.size() > 20);
  REQUIRE(fallback.size() == executor.size());
  for (std::size_t i = 0; i < executor.size(); ++i) {
    auto e = executor[i];
    auto f = fallback[i];
    INFO(e.name << " / " << f.name);
    CHECK(f.name == "stages[].fallback." + e.name.substr(9));
    CHECK(f.type == e.type);
    CHECK(f.default_text == e.default_text);
    CHECK(f.constraint == e.constraint);
    CHECK(f.required == e.required);
    CHECK(f.effect == e.effect);
    CHECK(f.applies_when
          == (e.applies_when.empty() ? "" : "fallback." + e.applies_when));
    if (i > 0) // the object's own description says what it is for
      CHECK(f.description == e.description);
  }
}

// -- canonical JSON and versions ----------------------------------------------

TEST_CASE("canonical JSON keeps absent limits absent and fills in present "
          "ones",
          "[config][providers]") {
  auto a = parse_ok(R"({
    "providers": [
      {"name": "bare"},
      {"name": "kling", "rate": {"per_s": 2}, "daily_quota": {"units": 5},
       "breaker": {}}
    ],
    "stages": [{"name": "video_gen", "provider": "kling",
                "fallback": {"provider": "bare"}},
               {"name": "tts"}]
  })");
  auto text = canonical_json(*a);
  auto doc = boost::json::parse(text).as_object();
  const auto& providers = doc.at("providers").as_array();
  REQUIRE(providers.size() == 2);
  CHECK(boost::json::serialize(providers[0])
        == R"({"name":"bare","max_concurrent":0})");
  const auto& kling = providers[1].as_object();
  CHECK(boost::json::serialize(kling.at("rate"))
        == R"({"per_s":2,"burst":1})");
  CHECK(boost::json::serialize(kling.at("daily_quota"))
        == R"({"units":5,"reset_at":"00:00","time_zone":"UTC",)"
           R"("window_s":86400,"units_per_call":1,"units_field":""})");
  CHECK(boost::json::serialize(kling.at("breaker"))
        == R"({"consecutive_failures":5,"failure_rate":0,"window":20,)"
           R"("cooldown_s":30,"probes":1})");
  const auto& stages = doc.at("stages").as_array();
  const auto& video = stages[0].as_object();
  CHECK(video.at("provider").as_string() == "kling");
  CHECK(video.at("fallback").at("provider").as_string() == "bare");
  CHECK(video.at("fallback").at("executor").at("kind").as_string()
        == "simulate");
  const auto& tts = stages[1].as_object();
  CHECK(tts.at("provider").as_string() == "");
  CHECK_FALSE(tts.contains("fallback"));

  auto b = parse_ok(text);
  CHECK(*a == *b);
  CHECK(a->version == b->version);
  CHECK(canonical_json(*b) == text);
  CHECK_FALSE(b->providers[0].has_rate);
  CHECK(b->providers[1].has_rate);
}

TEST_CASE("canonical JSON of a fallback keeps its executor",
          "[config][providers]") {
  auto a = parse_ok(R"({
    "providers": [{"name": "kling"}, {"name": "runway"}],
    "stages": [{"name": "video_gen", "provider": "kling",
                "executor": {"kind": "command", "argv": ["bin/video"]},
                "fallback": {"provider": "runway"}},
               {"name": "alt", "provider": "kling",
                "fallback": {"provider": "runway", "executor": {
                  "kind": "command", "argv": ["bin/alt"],
                  "env": {"MODEL": "gen3"}}}}]
  })");
  auto text = canonical_json(*a);
  auto b = parse_ok(text);
  CHECK(*a == *b);
  CHECK(b->stages[0].fallback_executor.command.argv == names{"bin/video"});
  CHECK(b->stages[1].fallback_executor.command.env.at("MODEL") == "gen3");
  CHECK(canonical_json(*b) == text);
}

TEST_CASE("the version changes with the providers", "[config][providers]") {
  auto a = parse_ok(file(R"([{"name": "p"}])"));
  auto same = parse_ok(file(R"([{"max_concurrent": 0, "name": "p"}])"));
  CHECK(a->version == same->version);
  std::vector<std::string> versions{
    parse_ok(file("[]"))->version,
    parse_ok(file(R"([{"name": "q"}])"))->version,
    parse_ok(file(R"([{"name": "p", "max_concurrent": 2}])"))->version,
    parse_ok(file(R"([{"name": "p", "rate": {"per_s": 1}}])"))->version,
    parse_ok(file(R"([{"name": "p", "breaker": {}}])"))->version,
    parse_ok(file(R"([{"name": "p", "daily_quota": {"units": 1}}])"))
      ->version,
    parse_ok(file(R"([{"name": "p"}])", R"("provider": "p")"))->version,
  };
  for (const auto& v : versions)
    CHECK(v != a->version);
  CHECK(std::set<std::string>(versions.begin(), versions.end()).size()
        == versions.size());
}

TEST_CASE("a snapshot with providers built in code is validated like a file",
          "[config][providers]") {
  snapshot s;
  provider_config p;
  p.name = "kling";
  p.max_concurrent = 3;
  p.has_rate = true;
  p.rate = {2, 4};
  s.providers.push_back(p);
  stage_config st;
  st.name = "video_gen";
  st.provider = "kling";
  s.stages.push_back(st);
  auto ok = validate(s);
  INFO(all_problems(ok));
  REQUIRE(ok.ok());
  CHECK(*ok.config == s);

  s.providers[0].rate.burst = 0;
  s.stages[0].provider = "kilng";
  auto bad = validate(s);
  REQUIRE_FALSE(bad.ok());
  CHECK_PROBLEM(bad, "providers[0].rate.burst", "must be >= 1, got 0");
  CHECK_PROBLEM(bad, "stages[0].provider",
                "unknown provider 'kilng' (did you mean 'kling'?)");
}

// -- diff ---------------------------------------------------------------------

TEST_CASE("a provider change is keyed by the provider's name and applies live",
          "[config][providers][diff]") {
  auto a = parse_ok(two_providers);
  auto b = *a;
  provider_of(b, "kling").rate.per_s = 5;
  provider_of(b, "kling").max_concurrent = 1;
  provider_of(b, "kling").breaker.cooldown_s = 60;
  // Order of providers alone is no change.
  std::reverse(b.providers.begin(), b.providers.end());
  auto cs = diff(*a, b);
  INFO(render(cs));
  CHECK(cs
        == std::vector<change>{
          {"providers[kling].max_concurrent", "3", "1", change_effect::live},
          {"providers[kling].rate.per_s", "2", "5", change_effect::live},
          {"providers[kling].breaker.cooldown_s", "30", "60",
           change_effect::live}});
  CHECK(restart_required(*a, b).empty());
  auto reordered = *a;
  std::reverse(reordered.providers.begin(), reordered.providers.end());
  CHECK(diff(*a, reordered).empty());
}

TEST_CASE("a provider added or removed is one change with its canonical JSON",
          "[config][providers][diff]") {
  auto a = parse_ok(two_providers);
  auto b = *a;
  b.providers.erase(b.providers.begin()); // kling
  b.stages[0].provider = "runway";
  b.stages[0].fallback_provider = "elevenlabs";
  auto& added = b.providers.emplace_back();
  added.name = "elevenlabs";
  added.has_breaker = true;
  auto cs = diff(*a, b);
  INFO(render(cs));
  REQUIRE(cs.size() == 4);
  CHECK(cs[0].key == "providers[elevenlabs]");
  CHECK(cs[0].before == "(none)");
  CHECK(boost::json::parse(cs[0].after).at("name").as_string()
        == "elevenlabs");
  CHECK(boost::json::parse(cs[0].after).as_object().contains("breaker"));
  CHECK(cs[0].effect == change_effect::live);
  CHECK(cs[1].key == "providers[kling]");
  CHECK(cs[1].after == "(none)");
  CHECK(canonical_json(*a).find(cs[1].before) != std::string::npos);
  CHECK(cs[1].effect == change_effect::live);
  CHECK(cs[2] == change{"stages[video_gen].provider", R"("kling")",
                        R"("runway")", change_effect::live});
  CHECK(cs[3] == change{"stages[video_gen].fallback.provider", R"("runway")",
                        R"("elevenlabs")", change_effect::live});
}

TEST_CASE("a limit added or removed is one change, even at its defaults",
          "[config][providers][diff]") {
  auto a = parse_ok(file(R"([{"name": "p", "breaker": {"probes": 2}}])"));
  // rate {per_s: 1} holds the struct's values: only its presence changes.
  auto b = parse_ok(file(R"([{"name": "p", "rate": {"per_s": 1}}])"));
  auto cs = diff(*a, *b);
  INFO(render(cs));
  REQUIRE(cs.size() == 2);
  CHECK(cs[0] == change{"providers[p].rate", "(none)",
                        R"({"per_s":1,"burst":1})", change_effect::live});
  CHECK(cs[1] == change{"providers[p].breaker",
                        R"({"consecutive_failures":5,"failure_rate":0,)"
                        R"("window":20,"cooldown_s":30,"probes":2})",
                        "(none)", change_effect::live});
  CHECK(diff(*b, *a).size() == 2);
}

TEST_CASE("a fallback added or removed is one change; its keys change one "
          "by one",
          "[config][providers][diff]") {
  auto without = parse_ok(R"({
    "providers": [{"name": "kling"}, {"name": "runway"}],
    "stages": [{"name": "video_gen", "provider": "kling"}]})");
  auto with = parse_ok(R"({
    "providers": [{"name": "kling"}, {"name": "runway"}],
    "stages": [{"name": "video_gen", "provider": "kling",
                "fallback": {"provider": "runway",
                             "executor": {"latency": {"ms": 100}}}}]})");
  auto added = diff(*without, *with);
  INFO(render(added));
  REQUIRE(added.size() == 1);
  CHECK(added[0].key == "stages[video_gen].fallback");
  CHECK(added[0].before == "(none)");
  auto json = boost::json::parse(added[0].after);
  CHECK(json.at("provider").as_string() == "runway");
  CHECK(json.at("executor").at("latency").at("ms").as_int64() == 100);
  CHECK(added[0].effect == change_effect::live);
  auto removed = diff(*with, *without);
  REQUIRE(removed.size() == 1);
  CHECK(removed[0].key == "stages[video_gen].fallback");
  CHECK(removed[0].after == "(none)");

  auto changed = *with;
  changed.stages[0].fallback_executor.simulate.latency.ms = 300;
  CHECK(diff(*with, changed)
        == std::vector<change>{
          {"stages[video_gen].fallback.executor.latency.ms", "100", "300",
           change_effect::live}});
}

TEST_CASE("every provider key and a stage's provider and fallback are live",
          "[config][providers]") {
  std::size_t provider_keys = 0;
  for (const auto& p : describe()) {
    auto is_provider_key = p.name == "providers"
                           || p.name.rfind("providers[].", 0) == 0;
    auto is_stage_key = p.name == "stages[].provider"
                        || p.name.rfind("stages[].fallback", 0) == 0;
    if (!is_provider_key && !is_stage_key)
      continue;
    INFO(p.name);
    CHECK(p.effect == change_effect::live);
    CHECK_FALSE(p.needs_restart);
    provider_keys += is_provider_key ? 1 : 0;
  }
  CHECK(provider_keys == 19);
  // keep_restart_only takes providers from the new snapshot.
  auto a = parse_ok(two_providers);
  auto b = *a;
  provider_of(b, "kling").rate.per_s = 9;
  b.providers.pop_back();
  b.stages[0].fallback_provider.clear();
  auto kept = keep_restart_only(*a, b);
  CHECK(kept == b);
}

// -- the shipped configuration ------------------------------------------------

TEST_CASE("the shipped config/spool.json attaches its providers to the seed "
          "stages",
          "[config][providers]") {
  auto r = load_file(SPOOL_SOURCE_DIR "/config/spool.json");
  INFO(all_problems(r));
  REQUIRE(r.ok());
  const auto& s = *r.config;
  names declared;
  for (const auto& p : s.providers)
    declared.push_back(p.name);
  CHECK(declared
        == names{"gemini", "kie_kling", "runway", "elevenlabs", "youtube"});

  CHECK(s.stage("asset_gen")->provider == "gemini");
  CHECK(s.stage("video_gen")->provider == "kie_kling");
  CHECK(s.stage("video_gen")->fallback_provider == "runway");
  CHECK(s.stage("video_gen")->fallback_executor.kind
        == executor_kind::simulate);
  CHECK(s.stage("narration")->provider == "elevenlabs");
  CHECK(s.stage("sfx")->provider == "elevenlabs");
  CHECK(s.stage("assembly")->provider.empty());
  for (const auto& st : s.stages)
    if (st.name != "video_gen")
      CHECK(st.fallback_provider.empty());

  const auto& gemini = *s.provider("gemini");
  CHECK(gemini.has_rate);
  CHECK(gemini.rate == rate_limit{5, 10});
  CHECK(gemini.has_quota);
  CHECK(gemini.quota.units == 1000);
  CHECK(gemini.quota.units_field == "images");
  const auto& kling = *s.provider("kie_kling");
  CHECK(kling.max_concurrent == 3);
  CHECK(kling.has_breaker);
  CHECK(kling.breaker.consecutive_failures == 5);
  CHECK(kling.breaker.cooldown_s == 60);
  CHECK_FALSE(kling.has_rate);
  const auto& eleven = *s.provider("elevenlabs");
  CHECK(eleven.rate == rate_limit{2, 4});
  CHECK(eleven.has_breaker);
  const auto& youtube = *s.provider("youtube");
  CHECK(youtube.has_quota);
  CHECK(youtube.quota.units == 10000);
  CHECK(youtube.quota.units_per_call == 1600);
  CHECK(youtube.quota.reset_at == "00:00");
  CHECK(youtube.quota.time_zone == "America/Los_Angeles");
  CHECK(youtube.quota.window_s == 86400);
}
