#include "runtime/config/config.hpp"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>

using namespace spool::config;
using names = std::vector<std::string>;

namespace {

std::string all_problems(const load_result& r) {
  std::string out;
  for (const auto& p : r.problems)
    out += to_string(p) + "\n";
  return out;
}

/// Whether `r` reports a problem at exactly `path` whose message contains
/// `text`.
bool has_problem(const load_result& r, std::string_view path,
                 std::string_view text) {
  return std::any_of(r.problems.begin(), r.problems.end(), [&](const auto& p) {
    return p.path == path && p.message.find(text) != std::string::npos;
  });
}

#define CHECK_PROBLEM(result, path, text)                                      \
  do {                                                                         \
    INFO(all_problems(result));                                                \
    CHECK(has_problem(result, path, text));                                    \
  } while (false)

/// Parses a file that must be valid.
std::shared_ptr<const snapshot> parse_ok(std::string_view text) {
  auto r = parse(text);
  INFO(all_problems(r));
  REQUIRE(r.ok());
  REQUIRE(r.problems.empty());
  return r.config;
}

/// Parses a file that must be refused.
load_result parse_bad(std::string_view text) {
  auto r = parse(text);
  REQUIRE_FALSE(r.ok());
  REQUIRE_FALSE(r.problems.empty());
  return r;
}

constexpr const char* pipeline = R"({
  "stages": [
    {"name": "asset_gen"},
    {"name": "video_gen", "after": ["asset_gen"]},
    {"name": "narration", "after": ["asset_gen"]},
    {"name": "sfx", "after": ["asset_gen"]},
    {"name": "assembly", "after": ["video_gen", "narration", "sfx"]}
  ]
})";

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

} // namespace

// -- defaults -----------------------------------------------------------------

TEST_CASE("a missing key takes its default", "[config]") {
  auto s = parse_ok(R"({"stages": [{"name": "a"}]})");
  CHECK(s->data_dir == ".spool/data");
  CHECK(s->database_url.empty());
  CHECK(s->worker.heartbeat_interval_s == 5);
  CHECK(s->worker.lease_s == 30);
  CHECK(s->worker.claim_batch_limit == 100);
  CHECK(s->worker.shutdown_grace_s == 30);
  CHECK(s->worker.rescue_interval_s == 15);
  CHECK(s->worker.stuck_sweep_interval_s == 3600);
  CHECK(s->worker.stuck_margin_s == 300);
  CHECK(s->worker.idle_poll_s == 1);
  CHECK(s->worker.progress_log_interval_s == 30);
  REQUIRE(s->stages.size() == 1);
  const auto& a = s->stages[0];
  CHECK(a.name == "a");
  CHECK(a.after.empty());
  CHECK(a.max_concurrent == 1);
  CHECK(a.timeout_s == 60);
  CHECK(a.timeout_per.empty());
  CHECK_FALSE(a.optional);
  CHECK(a.retry.max_retries == 3);
  CHECK(a.retry.base_s == 5);
  CHECK(a.retry.factor == 3);
  CHECK(a.retry.jitter == 0.2);
  CHECK(a.retry.max_delay_s == 3600);
  CHECK(a.executor.kind == executor_kind::simulate);
  CHECK(a.executor.simulate.latency.dist == latency_dist::fixed);
  CHECK(a.executor.simulate.latency.ms == 200);
  CHECK(a.executor.simulate.errors.total() == 0);
  CHECK(a.executor.simulate.retry_after_s == 2);
  CHECK(a.executor.simulate.cost == 0);
  CHECK(a.executor.simulate.seed == 1);
  CHECK(a.timeout() == std::chrono::seconds{60});
  CHECK(s->worker.lease() == std::chrono::seconds{30});
}

TEST_CASE("registry defaults agree with the defaults of the plain structs",
          "[config]") {
  // A snapshot built in code must mean the same as a file that omits keys.
  snapshot expected;
  stage_config a;
  a.name = "a";
  expected.stages.push_back(a);
  stage_config b;
  b.name = "b";
  b.executor.kind = executor_kind::command;
  b.executor.command.argv = {"prog"};
  expected.stages.push_back(b);
  auto parsed = parse_ok(R"({"stages": [
    {"name": "a"},
    {"name": "b", "executor": {"kind": "command", "argv": ["prog"]}}
  ]})");
  CHECK(*parsed == expected);
  // Variant fields the file could not set keep their struct defaults too.
  CHECK(parsed->stages[0].executor.command == command_config{});
  CHECK(parsed->stages[1].executor.simulate == simulate_config{});
}

TEST_CASE("a file may use comments and trailing commas", "[config]") {
  auto s = parse_ok(R"({
    // the only stage
    "stages": [{"name": "a", /* inline */ "max_concurrent": 2,},],
  })");
  CHECK(s->stages[0].max_concurrent == 2);
}

TEST_CASE("every key of the file is read into the snapshot", "[config]") {
  auto s = parse_ok(R"({
    "data_dir": "/var/lib/spool",
    "database_url": "postgresql://localhost/spool",
    "worker": {"heartbeat_interval_s": 0.5, "lease_s": 2,
               "claim_batch_limit": 7, "shutdown_grace_s": 0,
               "rescue_interval_s": 3, "stuck_sweep_interval_s": 60,
               "stuck_margin_s": 0, "idle_poll_s": 0.25,
               "progress_log_interval_s": 10},
    "stages": [
      {"name": "gen", "max_concurrent": 4, "timeout_s": 90,
       "timeout_per": "images", "optional": true,
       "retry": {"max_retries": 5, "base_s": 1, "factor": 2, "jitter": 0,
                 "max_delay_s": 60},
       "executor": {"kind": "simulate",
                    "latency": {"dist": "lognormal", "p50_ms": 800,
                                "p99_ms": 4000},
                    "errors": {"transient": 0.1, "network": 0.05,
                               "rate_limited": 0.02, "permanent": 0.01,
                               "timeout": 0.01},
                    "retry_after_s": 7, "cost": 0.04,
                    "seed": 18446744073709551615}},
      {"name": "pack", "after": ["gen"],
       "executor": {"kind": "command", "argv": ["bin/pack", "--fast"],
                    "env": {"MODE": "x"}, "kill_grace_s": 1.5}},
      {"name": "wait", "executor": {"latency": {"dist": "uniform",
                                                "min_ms": 5, "max_ms": 5}}}
    ]
  })");
  CHECK(s->data_dir == "/var/lib/spool");
  CHECK(s->database_url == "postgresql://localhost/spool");
  CHECK(s->worker.heartbeat_interval() == std::chrono::milliseconds{500});
  CHECK(s->worker.claim_batch_limit == 7);
  CHECK(s->worker.idle_poll() == std::chrono::milliseconds{250});
  const auto* gen = s->stage("gen");
  REQUIRE(gen != nullptr);
  CHECK(gen->max_concurrent == 4);
  CHECK(gen->timeout_per == "images");
  CHECK(gen->optional);
  CHECK(gen->retry.max_retries == 5);
  CHECK(gen->retry.factor == 2);
  const auto& sim = gen->executor.simulate;
  CHECK(sim.latency.dist == latency_dist::lognormal);
  CHECK(sim.latency.p50_ms == 800);
  CHECK(sim.latency.p99_ms == 4000);
  CHECK(sim.errors.of(spool::outcome_kind::network) == 0.05);
  CHECK(sim.errors.of(spool::outcome_kind::ok) == 0);
  CHECK(sim.retry_after_s == 7);
  CHECK(sim.cost == 0.04);
  CHECK(sim.seed == 18446744073709551615ull);
  const auto* pack = s->stage("pack");
  REQUIRE(pack != nullptr);
  CHECK(pack->executor.kind == executor_kind::command);
  CHECK(pack->executor.command.argv == names{"bin/pack", "--fast"});
  CHECK(pack->executor.command.env.at("MODE") == "x");
  CHECK(pack->executor.command.kill_grace()
        == std::chrono::milliseconds{1500});
  CHECK(s->stage("wait")->executor.simulate.latency.dist
        == latency_dist::uniform);
  CHECK(s->stage("nope") == nullptr);
}

// -- problems -----------------------------------------------------------------

TEST_CASE("a JSON syntax error is reported with its line and column",
          "[config]") {
  auto r = parse_bad("{\n  \"stages\": [\n    {\"name\": \"a\",, }\n  ]\n}");
  REQUIRE(r.problems.size() == 1);
  CHECK(r.problems[0].path.empty());
  CHECK_PROBLEM(r, "", "JSON syntax error at line 3, column 18");
}

TEST_CASE("truncated JSON is a syntax error", "[config]") {
  auto r = parse_bad(R"({"stages": [)");
  CHECK_PROBLEM(r, "", "JSON syntax error at line 1");
}

TEST_CASE("a document that is not an object is refused", "[config]") {
  auto r = parse_bad("[1, 2]");
  CHECK_PROBLEM(r, "", "must be a JSON object");
}

TEST_CASE("an unknown key is reported with its path", "[config]") {
  auto r = parse_bad(R"({
    "colour": "blue",
    "worker": {"lease": 30},
    "stages": [{"name": "a", "retry": {"max_retry": 2, "zzz": 1}},
               {"name": "b", "executor": {"latency": {"p95_ms": 3}}}]
  })");
  CHECK_PROBLEM(r, "colour", "unknown key");
  CHECK_PROBLEM(r, "worker.lease", "unknown key (did you mean 'lease_s'?)");
  CHECK_PROBLEM(r, "stages[0].retry.max_retry",
                "did you mean 'max_retries'?");
  CHECK_PROBLEM(r, "stages[0].retry.zzz", "unknown key");
  CHECK_PROBLEM(r, "stages[1].executor.latency.p95_ms", "unknown key");
  CHECK(r.problems.size() == 5);
}

TEST_CASE("a dotted key does not reach a nested property", "[config]") {
  auto r = parse_bad(R"({"stages": [{"name": "a", "retry.factor": 2}]})");
  CHECK_PROBLEM(r, "stages[0].retry.factor", "unknown key");
}

TEST_CASE("a repeated key is reported instead of silently winning",
          "[config]") {
  auto r = parse_bad(R"({"stages": [{"name": "a", "max_concurrent": 1,
                                     "max_concurrent": 2}]})");
  CHECK_PROBLEM(r, "stages[0].max_concurrent", "duplicate key");
}

TEST_CASE("a value of the wrong type names the field and the expected type",
          "[config]") {
  auto r = parse_bad(R"({
    "data_dir": 5,
    "worker": {"lease_s": "30", "claim_batch_limit": 2.5},
    "stages": [{"name": "a", "optional": "yes", "after": "b",
                "executor": {"kind": "simulate", "seed": -1,
                             "latency": {"dist": "gaussian"}}},
               {"name": "b", "after": ["a", 7], "retry": 3,
                "executor": {"kind": "command", "argv": ["x"],
                             "env": {"A": 1}}}]
  })");
  CHECK_PROBLEM(r, "data_dir", "must be a string, got 5");
  CHECK_PROBLEM(r, "worker.lease_s", "must be a number, got '30'");
  CHECK_PROBLEM(r, "worker.claim_batch_limit", "must be an integer, got 2.5");
  CHECK_PROBLEM(r, "stages[0].optional", "must be true or false, got 'yes'");
  CHECK_PROBLEM(r, "stages[0].after", "must be an array of strings");
  CHECK_PROBLEM(r, "stages[0].executor.seed", "must be >= 0, got -1");
  CHECK_PROBLEM(r, "stages[0].executor.latency.dist",
                "must be one of 'fixed', 'uniform', 'lognormal', got "
                "'gaussian'");
  CHECK_PROBLEM(r, "stages[1].after[1]", "must be a string, got 7");
  CHECK_PROBLEM(r, "stages[1].retry", "must be an object, got 3");
  CHECK_PROBLEM(r, "stages[1].executor.env.A", "must be a string, got 1");
}

TEST_CASE("a value out of bounds is reported with the bound and the value",
          "[config]") {
  auto r = parse_bad(R"({
    "worker": {"heartbeat_interval_s": 0, "claim_batch_limit": 20000,
               "shutdown_grace_s": -1},
    "stages": [{"name": "a", "max_concurrent": 0, "timeout_s": -5,
                "retry": {"max_retries": 101, "factor": 0.5, "jitter": 1.5,
                          "base_s": -1},
                "executor": {"errors": {"network": 2}}}]
  })");
  CHECK_PROBLEM(r, "worker.heartbeat_interval_s", "must be > 0, got 0");
  CHECK_PROBLEM(r, "worker.claim_batch_limit", "must be <= 10000, got 20000");
  CHECK_PROBLEM(r, "worker.shutdown_grace_s", "must be >= 0, got -1");
  CHECK_PROBLEM(r, "stages[0].max_concurrent", "must be >= 1, got 0");
  CHECK_PROBLEM(r, "stages[0].timeout_s", "must be > 0, got -5");
  CHECK_PROBLEM(r, "stages[0].retry.max_retries", "must be <= 100, got 101");
  CHECK_PROBLEM(r, "stages[0].retry.factor", "must be >= 1, got 0.5");
  CHECK_PROBLEM(r, "stages[0].retry.jitter", "must be <= 1, got 1.5");
  CHECK_PROBLEM(r, "stages[0].retry.base_s", "must be >= 0, got -1");
  CHECK_PROBLEM(r, "stages[0].executor.errors.network",
                "must be <= 1, got 2");
}

TEST_CASE("several problems in one file are all reported", "[config]") {
  auto r = parse_bad(R"({
    "worker": {"lease_s": 0},
    "stages": [
      {"name": "a", "retry": {"factor": 0}},
      {"name": "b", "after": ["a", "foo"], "colour": 1},
      {"name": "c", "max_concurrent": "many"}
    ]
  })");
  CHECK_PROBLEM(r, "worker.lease_s", "must be > 0, got 0");
  CHECK_PROBLEM(r, "stages[0].retry.factor", "must be >= 1, got 0");
  CHECK_PROBLEM(r, "stages[1].after[1]", "unknown stage 'foo'");
  CHECK_PROBLEM(r, "stages[1].colour", "unknown key");
  CHECK_PROBLEM(r, "stages[2].max_concurrent", "must be an integer");
  CHECK(r.problems.size() == 5);
  CHECK(r.config == nullptr);
}

TEST_CASE("a dependency cycle is reported with its path", "[config]") {
  auto r = parse_bad(R"({"stages": [
    {"name": "root"},
    {"name": "a", "after": ["root", "b"]},
    {"name": "b", "after": ["a"]}
  ]})");
  CHECK_PROBLEM(r, "stages[1].after", "dependency cycle: a -> b -> a");
  CHECK(r.problems.size() == 1);
}

TEST_CASE("a stage that waits for itself is a dependency cycle", "[config]") {
  auto r = parse_bad(R"({"stages": [{"name": "a", "after": ["a"]}]})");
  CHECK_PROBLEM(r, "stages[0].after", "dependency cycle: a -> a");
}

TEST_CASE("an unknown stage in after is reported at its index", "[config]") {
  auto r = parse_bad(R"({"stages": [
    {"name": "a"}, {"name": "b", "after": ["a", "foo", "a"]}
  ]})");
  CHECK_PROBLEM(r, "stages[1].after[1]", "unknown stage 'foo'");
  CHECK_PROBLEM(r, "stages[1].after[2]", "duplicate dependency 'a'");
}

TEST_CASE("a stage name may appear only once", "[config]") {
  auto r = parse_bad(R"({"stages": [{"name": "x"}, {"name": "y"},
                                    {"name": "x"}]})");
  CHECK_PROBLEM(r, "stages[2].name",
                "duplicate stage name 'x' (first at stages[0])");
}

TEST_CASE("a stage name must be a lower_snake identifier", "[config]") {
  auto r = parse_bad(R"({"stages": [{"name": "Video-Gen"}, {"name": ""},
                                    {"name": "9lives"}, {"name": "ok_1"}]})");
  CHECK_PROBLEM(r, "stages[0].name", "must match [a-z][a-z0-9_]{0,62}");
  CHECK_PROBLEM(r, "stages[1].name", "must match");
  CHECK_PROBLEM(r, "stages[2].name", "must match");
  CHECK(r.problems.size() == 3);
  std::string long_name(64, 'a');
  auto too_long =
    parse_bad(R"({"stages": [{"name": ")" + long_name + "\"}]}");
  CHECK_PROBLEM(too_long, "stages[0].name", "must match");
}

TEST_CASE("a stage without a name is refused", "[config]") {
  auto r = parse_bad(R"({"stages": [{"max_concurrent": 2}, 5]})");
  CHECK_PROBLEM(r, "stages[0].name", "missing required key");
  CHECK_PROBLEM(r, "stages[1]", "must be an object, got 5");
}

TEST_CASE("a configuration needs at least one stage", "[config]") {
  CHECK_PROBLEM(parse_bad("{}"), "stages", "missing required key");
  CHECK_PROBLEM(parse_bad(R"({"stages": []})"), "stages",
                "must list at least one stage");
  CHECK_PROBLEM(parse_bad(R"({"stages": {}})"), "stages",
                "must be an array of stages");
}

TEST_CASE("the lease must be longer than the heartbeat interval", "[config]") {
  auto r = parse_bad(R"({"worker": {"heartbeat_interval_s": 10,
                                    "lease_s": 10},
                         "stages": [{"name": "a"}]})");
  CHECK_PROBLEM(r, "worker.lease_s",
                "must be > worker.heartbeat_interval_s (10), got 10");
}

TEST_CASE("keys of another executor kind or latency shape are refused",
          "[config]") {
  auto r = parse_bad(R"({"stages": [
    {"name": "a", "executor": {"argv": ["x"], "kill_grace_s": 1}},
    {"name": "b", "executor": {"kind": "command", "argv": ["x"],
                               "latency": {"ms": 5}, "seed": 3}},
    {"name": "c", "executor": {"latency": {"dist": "uniform", "ms": 5}}}
  ]})");
  CHECK_PROBLEM(r, "stages[0].executor.argv",
                "only valid when executor.kind is 'command'");
  CHECK_PROBLEM(r, "stages[0].executor.kill_grace_s",
                "only valid when executor.kind is 'command'");
  CHECK_PROBLEM(r, "stages[1].executor.latency",
                "only valid when executor.kind is 'simulate'");
  CHECK_PROBLEM(r, "stages[1].executor.seed",
                "only valid when executor.kind is 'simulate'");
  CHECK_PROBLEM(r, "stages[2].executor.latency.ms",
                "only valid when executor.latency.dist is 'fixed'");
}

TEST_CASE("a command executor needs a program", "[config]") {
  auto r = parse_bad(R"({"stages": [
    {"name": "a", "executor": {"kind": "command"}},
    {"name": "b", "executor": {"kind": "command", "argv": []}},
    {"name": "c", "executor": {"kind": "command", "argv": ["", "x"]}}
  ]})");
  CHECK_PROBLEM(r, "stages[0].executor.argv", "missing required key");
  CHECK_PROBLEM(r, "stages[1].executor.argv", "empty list");
  CHECK_PROBLEM(r, "stages[2].executor.argv", "argv[0] is empty");
}

TEST_CASE("simulated errors and latencies must be consistent", "[config]") {
  auto r = parse_bad(R"({"stages": [
    {"name": "a", "executor": {"errors": {"transient": 0.6,
                                          "permanent": 0.5}}},
    {"name": "b", "executor": {"latency": {"dist": "uniform",
                                           "min_ms": 50, "max_ms": 10}}},
    {"name": "c", "executor": {"latency": {"dist": "lognormal",
                                           "p50_ms": 500, "p99_ms": 100}}},
    {"name": "d", "executor": {"latency": {"dist": "lognormal",
                                           "p50_ms": 0}}}
  ]})");
  CHECK_PROBLEM(r, "stages[0].executor.errors",
                "probabilities must sum to <= 1, got 1.1");
  CHECK_PROBLEM(r, "stages[1].executor.latency.max_ms",
                "must be >= min_ms (50), got 10");
  CHECK_PROBLEM(r, "stages[2].executor.latency.p99_ms",
                "must be >= p50_ms (500), got 100");
  CHECK_PROBLEM(r, "stages[3].executor.latency.p50_ms", "must be > 0, got 0");
}

TEST_CASE("a problem renders as its path and message", "[config]") {
  CHECK(to_string(problem{"worker.lease_s", "must be > 0, got 0"})
        == "worker.lease_s: must be > 0, got 0");
  CHECK(to_string(problem{"", "JSON syntax error"}) == "JSON syntax error");
}

// -- files --------------------------------------------------------------------

TEST_CASE("an unreadable file is one problem that names the file",
          "[config]") {
  auto r = load_file("/nonexistent/spool.json");
  REQUIRE_FALSE(r.ok());
  REQUIRE(r.problems.size() == 1);
  CHECK(r.problems[0].path.empty());
  CHECK_PROBLEM(r, "", "/nonexistent/spool.json");
}

TEST_CASE("the shipped config/spool.json validates", "[config]") {
  auto r = load_file(SPOOL_SOURCE_DIR "/config/spool.json");
  INFO(all_problems(r));
  REQUIRE(r.ok());
  const auto& s = *r.config;
  CHECK(s.topo_order()
        == names{"asset_gen", "video_gen", "narration", "sfx", "assembly"});
  CHECK(s.stage("asset_gen")->max_concurrent == 5);
  CHECK(s.stage("asset_gen")->timeout_s == 120);
  CHECK(s.stage("asset_gen")->timeout_per == "images");
  CHECK(s.stage("video_gen")->max_concurrent == 3);
  CHECK(s.stage("video_gen")->timeout_s == 600);
  CHECK(s.stage("narration")->max_concurrent == 10);
  CHECK(s.stage("sfx")->max_concurrent == 10);
  CHECK(s.stage("assembly")->max_concurrent == 5);
  CHECK(s.dependencies("assembly") == names{"video_gen", "narration", "sfx"});
  CHECK(s.worker == worker_config{});
  for (const auto& st : s.stages)
    CHECK(st.executor.kind == executor_kind::simulate);
}

TEST_CASE("every property is documented in config/README.md", "[config]") {
  auto readme = read_text(SPOOL_SOURCE_DIR "/config/README.md");
  REQUIRE_FALSE(readme.empty());
  for (const auto& p : describe()) {
    INFO(p.name);
    CHECK(readme.find("`" + p.name + "`") != std::string::npos);
  }
}

// -- registry -----------------------------------------------------------------

TEST_CASE("every property is described once with a type and a description",
          "[config]") {
  auto props = describe();
  REQUIRE(props.size() > 30);
  std::set<std::string> seen;
  for (const auto& p : props) {
    INFO(p.name);
    CHECK(seen.insert(p.name).second);
    CHECK_FALSE(p.description.empty());
    if (p.type != property_type::object && p.type != property_type::object_list)
      CHECK((p.required || !p.default_text.empty()));
  }
  auto find = [&](std::string_view name) {
    auto it = std::find_if(props.begin(), props.end(),
                           [&](const auto& p) { return p.name == name; });
    REQUIRE(it != props.end());
    return *it;
  };
  auto lease = find("worker.lease_s");
  CHECK(lease.type == property_type::number);
  CHECK(lease.default_text == "30");
  CHECK_FALSE(lease.needs_restart);
  auto factor = find("stages[].retry.factor");
  CHECK(factor.constraint == ">= 1");
  CHECK(factor.default_text == "3");
  auto kind = find("stages[].executor.kind");
  CHECK(kind.constraint == "one of simulate, command");
  CHECK(kind.default_text == "\"simulate\"");
  auto argv = find("stages[].executor.argv");
  CHECK(argv.required);
  CHECK(argv.type == property_type::string_list);
  CHECK(argv.applies_when == "executor.kind = command");
  CHECK(find("database_url").needs_restart);
  CHECK(find("data_dir").needs_restart);
  CHECK(find("stages[].max_concurrent").constraint == "1..10000");
}

// -- versions and restarts ----------------------------------------------------

TEST_CASE("the version is stable and changes with the configuration",
          "[config]") {
  auto a = parse_ok(pipeline);
  // Same meaning, other layout, key order and explicit defaults.
  auto b = parse_ok(R"({"worker": {"lease_s": 30}, "stages": [
    {"max_concurrent": 1, "name": "asset_gen"},
    {"after": ["asset_gen"], "name": "video_gen"},
    {"name": "narration", "after": ["asset_gen"],
     "retry": {"factor": 3.0}},
    {"name": "sfx", "after": ["asset_gen"]},
    {"name": "assembly", "after": ["video_gen", "narration", "sfx"]}]})");
  REQUIRE(a->version.size() == 16);
  CHECK(a->version.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(a->version == b->version);
  CHECK(a->version == compute_version(*a));
  auto c = parse_ok(R"({"stages": [{"name": "asset_gen",
                                    "max_concurrent": 2}]})");
  auto d = parse_ok(R"({"stages": [{"name": "asset_gen",
                                    "max_concurrent": 3}]})");
  CHECK(c->version != d->version);
  CHECK(a->version != c->version);
}

TEST_CASE("the canonical JSON parses back to an equal snapshot", "[config]") {
  auto a = parse_ok(R"({"stages": [
    {"name": "a", "retry": {"jitter": 0.1}, "executor": {
       "latency": {"dist": "uniform", "min_ms": 1.5, "max_ms": 2},
       "seed": 18446744073709551615}},
    {"name": "b", "after": ["a"], "executor": {"kind": "command",
       "argv": ["x", "y \"quoted\""], "env": {"K": "v"}}}]})");
  auto text = canonical_json(*a);
  CHECK(text.find("\"argv\"") != std::string::npos);
  CHECK(text.find("\"jitter\":0.1") != std::string::npos);
  auto b = parse_ok(text);
  CHECK(*a == *b);
  CHECK(a->version == b->version);
  CHECK(canonical_json(*b) == text);
}

TEST_CASE("a snapshot built in code is validated like a file", "[config]") {
  snapshot s;
  stage_config st;
  st.name = "only";
  st.max_concurrent = 4;
  s.stages.push_back(st);
  auto ok = validate(s);
  INFO(all_problems(ok));
  REQUIRE(ok.ok());
  CHECK(*ok.config == s);
  CHECK(ok.config->version == compute_version(s));

  s.stages[0].max_concurrent = 0;
  s.stages[0].after = {"ghost"};
  auto bad = validate(s);
  REQUIRE_FALSE(bad.ok());
  CHECK_PROBLEM(bad, "stages[0].max_concurrent", "must be >= 1, got 0");
  CHECK_PROBLEM(bad, "stages[0].after[0]", "unknown stage 'ghost'");
}

TEST_CASE("restart_required names the changed properties that need a restart",
          "[config]") {
  auto base = parse_ok(pipeline);
  SECTION("live changes need no restart") {
    auto next = *base;
    next.worker.lease_s = 60;
    next.stages[1].max_concurrent = 7;
    next.stages[1].retry.max_retries = 1;
    next.stages[0].executor.kind = executor_kind::command;
    CHECK(restart_required(*base, next).empty());
  }
  SECTION("the database URL and the data directory need one") {
    auto next = *base;
    next.database_url = "postgresql://db/spool";
    CHECK(restart_required(*base, next) == names{"database_url"});
    next.data_dir = "/srv/spool";
    CHECK(restart_required(*base, next) == names{"data_dir", "database_url"});
  }
}

TEST_CASE("restart-only properties are exactly the top-level locations",
          "[config]") {
  names restart;
  for (const auto& p : describe())
    if (p.needs_restart)
      restart.push_back(p.name);
  CHECK(restart == names{"data_dir", "database_url"});
}

// -- topology and helpers -----------------------------------------------------

TEST_CASE("a snapshot answers topology questions from its after lists",
          "[config]") {
  auto s = parse_ok(pipeline);
  CHECK(s->topo_order()
        == names{"asset_gen", "video_gen", "narration", "sfx", "assembly"});
  CHECK(s->dependents("asset_gen") == names{"video_gen", "narration", "sfx"});
  CHECK(s->dependents("assembly").empty());
  CHECK(s->dependencies("assembly")
        == names{"video_gen", "narration", "sfx"});
  CHECK(s->roots() == names{"asset_gen"});
  CHECK(s->graph().size() == 5);
}

TEST_CASE("the environment's database URL wins over the file's", "[config]") {
  snapshot s;
  s.database_url = "postgresql://file/db";
  CHECK(effective_database_url(s, nullptr) == "postgresql://file/db");
  CHECK(effective_database_url(s, "") == "postgresql://file/db");
  CHECK(effective_database_url(s, "postgresql://env/db")
        == "postgresql://env/db");
}

TEST_CASE("durations convert to rounded, saturating milliseconds",
          "[config]") {
  using std::chrono::milliseconds;
  CHECK(to_duration(1.5) == milliseconds{1500});
  CHECK(to_duration(0.0004) == milliseconds{0});
  CHECK(to_duration(0.0006) == milliseconds{1});
  CHECK(to_duration(-3) == milliseconds{0});
  CHECK(to_duration(1e300) == milliseconds::max());
}
