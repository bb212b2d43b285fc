#include "runtime/config/config.hpp"

#include <algorithm>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "tests/support/config_parse.hpp"

#include <catch2/catch.hpp>

using namespace spool::config;
using spool::test::all_problems;
using spool::test::parse_bad;
using spool::test::parse_ok;
using spool::test::seed_pipeline;
using names = std::vector<std::string>;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// The row of the property table in config/README.md for `p`: name, type,
/// default, constraint (with its condition), change, description.
std::string readme_row(const property_info& p) {
  std::string def;
  if (p.required)
    def = "required";
  else if (!p.default_text.empty())
    def = "`" + p.default_text + "`";
  auto constraint = p.constraint;
  if (!p.applies_when.empty())
    constraint += (constraint.empty() ? "" : "; ") + std::string("only when ")
                  + p.applies_when;
  return "| `" + p.name + "` | " + std::string(to_string(p.type)) + " | "
         + def + " | " + constraint + " | "
         + std::string(to_string(p.effect)) + " | " + p.description
         + " |";
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
  CHECK(s->worker.record_batch_limit == 500);
  CHECK(s->worker.db_statement_timeout_s == 30);
  CHECK(s->worker.db_lock_timeout_s == 10);
  CHECK(s->worker.db_connect_timeout_s == 10);
  CHECK(s->worker.db_keepalives_idle_s == 10);
  CHECK(s->worker.db_keepalives_interval_s == 5);
  CHECK(s->worker.db_keepalives_count == 3);
  CHECK(s->worker.db_tcp_user_timeout_s == 30);
  CHECK(s->worker.db_call_timeout_s == 60);
  CHECK(s->worker.db_call_timeout() == std::chrono::seconds{60});
  REQUIRE(s->stages.size() == 1);
  const auto& a = s->stages[0];
  CHECK(a.name == "a");
  CHECK(a.after.empty());
  CHECK(a.max_concurrent == 1);
  CHECK(a.timeout_s == 60);
  CHECK(a.timeout_per.empty());
  CHECK(a.timeout_max_s == 86400);
  CHECK_FALSE(a.optional);
  CHECK(a.max_cost == 10000);
  CHECK(a.max_output_bytes == 1048576);
  CHECK(a.retry.max_retries == 3);
  CHECK(a.retry.base_s == 5);
  CHECK(a.retry.factor == 3);
  CHECK(a.retry.jitter == 0.2);
  CHECK(a.retry.max_delay_s == 3600);
  CHECK(a.retry.max_snooze_s == 3600);
  CHECK(a.retry.max_snoozed_total_s == 86400);
  CHECK(a.retry.max_lost_leases == 5);
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
               "progress_log_interval_s": 10, "record_batch_limit": 50,
               "db_statement_timeout_s": 5, "db_lock_timeout_s": 2,
               "db_connect_timeout_s": 3, "db_keepalives_idle_s": 4,
               "db_keepalives_interval_s": 2, "db_keepalives_count": 6,
               "db_tcp_user_timeout_s": 7.5, "db_call_timeout_s": 9},
    "stages": [
      {"name": "gen", "max_concurrent": 4, "timeout_s": 90,
       "timeout_per": "images", "timeout_max_s": 900, "optional": true,
       "max_cost": 2.5, "max_output_bytes": 4096,
       "retry": {"max_retries": 5, "base_s": 1, "factor": 2, "jitter": 0,
                 "max_delay_s": 60, "max_snooze_s": 120,
                 "max_snoozed_total_s": 7200, "max_lost_leases": 0},
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
  CHECK(s->worker.record_batch_limit == 50);
  CHECK(s->worker.db_statement_timeout() == std::chrono::seconds{5});
  CHECK(s->worker.db_lock_timeout() == std::chrono::seconds{2});
  CHECK(s->worker.db_connect_timeout_s == 3);
  CHECK(s->worker.db_keepalives_idle_s == 4);
  CHECK(s->worker.db_keepalives_interval_s == 2);
  CHECK(s->worker.db_keepalives_count == 6);
  CHECK(s->worker.db_tcp_user_timeout()
        == std::chrono::milliseconds{7500});
  CHECK(s->worker.db_call_timeout() == std::chrono::seconds{9});
  const auto* gen = s->stage("gen");
  REQUIRE(gen != nullptr);
  CHECK(gen->max_concurrent == 4);
  CHECK(gen->timeout_per == "images");
  CHECK(gen->timeout_max() == std::chrono::seconds{900});
  CHECK(gen->optional);
  CHECK(gen->max_cost == 2.5);
  CHECK(gen->max_output_bytes == 4096);
  CHECK(gen->retry.max_snooze_s == 120);
  CHECK(gen->retry.max_snoozed_total_s == 7200);
  CHECK(gen->retry.max_lost_leases == 0);
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
  CHECK_PROBLEM(r, "worker.heartbeat_interval_s", "must be >= 0.01, got 0");
  CHECK_PROBLEM(r, "worker.claim_batch_limit", "must be <= 10000, got 20000");
  CHECK_PROBLEM(r, "worker.shutdown_grace_s", "must be >= 0, got -1");
  CHECK_PROBLEM(r, "stages[0].max_concurrent", "must be >= 1, got 0");
  CHECK_PROBLEM(r, "stages[0].timeout_s", "must be >= 0.001, got -5");
  CHECK_PROBLEM(r, "stages[0].retry.max_retries", "must be <= 100, got 101");
  CHECK_PROBLEM(r, "stages[0].retry.factor", "must be >= 1, got 0.5");
  CHECK_PROBLEM(r, "stages[0].retry.jitter", "must be <= 1, got 1.5");
  CHECK_PROBLEM(r, "stages[0].retry.base_s", "must be >= 0, got -1");
  CHECK_PROBLEM(r, "stages[0].executor.errors.network",
                "must be <= 1, got 2");
}

TEST_CASE("values that would break a worker are out of bounds", "[config]") {
  // Each of these passed `config check` once and wedged or spun a worker.
  auto r = parse_bad(R"({
    "worker": {"heartbeat_interval_s": 1e300, "idle_poll_s": 1e-300,
               "lease_s": 1e20, "rescue_interval_s": 1e-300,
               "stuck_sweep_interval_s": 0, "stuck_margin_s": 1e12,
               "shutdown_grace_s": 1e15, "progress_log_interval_s": 1e-9,
               "record_batch_limit": 0, "db_statement_timeout_s": 0,
               "db_lock_timeout_s": 1e9, "db_connect_timeout_s": 1,
               "db_keepalives_idle_s": 0, "db_keepalives_interval_s": 601,
               "db_keepalives_count": 101, "db_tcp_user_timeout_s": 0.5,
               "db_call_timeout_s": 1e300},
    "stages": [
      {"name": "a", "timeout_s": 9.3e9, "timeout_max_s": 1e9,
       "max_cost": 0, "max_output_bytes": 1,
       "retry": {"base_s": 1e300, "factor": 1e300, "max_delay_s": 1e13,
                 "max_snooze_s": 0, "max_snoozed_total_s": 1e7,
                 "max_lost_leases": -1},
       "executor": {"cost": 1e8, "retry_after_s": 9.2e12,
                    "latency": {"ms": 1e300}}},
      {"name": "b", "max_cost": 1e12, "max_output_bytes": 67108865,
       "retry": {"max_lost_leases": 101},
       "executor": {"latency": {"dist": "lognormal", "p50_ms": 1e300,
                                "p99_ms": 1e301}}},
      {"name": "c", "executor": {"kind": "command", "argv": ["x"],
                                 "kill_grace_s": 1e300}},
      {"name": "d", "executor": {"latency": {"dist": "uniform",
                                             "min_ms": -1, "max_ms": 4e6}}}
    ]
  })");
  CHECK_PROBLEM(r, "worker.heartbeat_interval_s",
                "must be <= 3600, got 1e+300");
  CHECK_PROBLEM(r, "worker.idle_poll_s", "must be >= 0.01, got 1e-300");
  CHECK_PROBLEM(r, "worker.lease_s", "must be <= 86400, got 1e+20");
  CHECK_PROBLEM(r, "worker.rescue_interval_s", "must be >= 0.01");
  CHECK_PROBLEM(r, "worker.stuck_sweep_interval_s", "must be >= 0.01, got 0");
  CHECK_PROBLEM(r, "worker.stuck_margin_s", "must be <= 86400");
  CHECK_PROBLEM(r, "worker.shutdown_grace_s", "must be <= 86400");
  CHECK_PROBLEM(r, "worker.progress_log_interval_s", "must be >= 0.01");
  CHECK_PROBLEM(r, "worker.record_batch_limit", "must be >= 1, got 0");
  CHECK_PROBLEM(r, "worker.db_statement_timeout_s", "must be >= 0.1, got 0");
  CHECK_PROBLEM(r, "worker.db_lock_timeout_s", "must be <= 3600");
  CHECK_PROBLEM(r, "worker.db_connect_timeout_s", "must be >= 2, got 1");
  CHECK_PROBLEM(r, "worker.db_keepalives_idle_s", "must be >= 1, got 0");
  CHECK_PROBLEM(r, "worker.db_keepalives_interval_s",
                "must be <= 600, got 601");
  CHECK_PROBLEM(r, "worker.db_keepalives_count", "must be <= 100, got 101");
  CHECK_PROBLEM(r, "worker.db_tcp_user_timeout_s", "must be >= 1, got 0.5");
  CHECK_PROBLEM(r, "worker.db_call_timeout_s", "must be <= 7200");
  CHECK_PROBLEM(r, "stages[0].timeout_s",
                "must be <= 604800, got 9300000000");
  CHECK_PROBLEM(r, "stages[0].timeout_max_s",
                "must be <= 604800, got 1000000000");
  CHECK_PROBLEM(r, "stages[0].max_cost", "must be > 0, got 0");
  CHECK_PROBLEM(r, "stages[0].max_output_bytes", "must be >= 2, got 1");
  CHECK_PROBLEM(r, "stages[0].retry.base_s", "must be <= 86400");
  CHECK_PROBLEM(r, "stages[0].retry.factor", "must be <= 100");
  CHECK_PROBLEM(r, "stages[0].retry.max_delay_s", "must be <= 86400");
  CHECK_PROBLEM(r, "stages[0].retry.max_snooze_s", "must be > 0, got 0");
  CHECK_PROBLEM(r, "stages[0].retry.max_snoozed_total_s",
                "must be <= 604800, got 10000000");
  CHECK_PROBLEM(r, "stages[0].retry.max_lost_leases", "must be >= 0, got -1");
  CHECK_PROBLEM(r, "stages[0].executor.cost",
                "must be <= 10000, got 100000000");
  CHECK_PROBLEM(r, "stages[0].executor.retry_after_s",
                "must be <= 86400, got 9200000000000");
  CHECK_PROBLEM(r, "stages[0].executor.latency.ms", "must be <= 3600000");
  CHECK_PROBLEM(r, "stages[1].max_cost",
                "must be <= 1000000, got 1000000000000");
  CHECK_PROBLEM(r, "stages[1].max_output_bytes",
                "must be <= 67108864, got 67108865");
  CHECK_PROBLEM(r, "stages[1].retry.max_lost_leases",
                "must be <= 100, got 101");
  CHECK_PROBLEM(r, "stages[1].executor.latency.p50_ms", "must be <= 3600000");
  CHECK_PROBLEM(r, "stages[1].executor.latency.p99_ms", "must be <= 3600000");
  CHECK_PROBLEM(r, "stages[2].executor.kill_grace_s", "must be <= 3600");
  CHECK_PROBLEM(r, "stages[3].executor.latency.min_ms", "must be >= 0");
  CHECK_PROBLEM(r, "stages[3].executor.latency.max_ms", "must be <= 3600000");
}

TEST_CASE("the bounds themselves are accepted", "[config]") {
  auto low = parse_ok(R"({
    "worker": {"heartbeat_interval_s": 0.01, "lease_s": 0.02,
               "idle_poll_s": 0.01, "rescue_interval_s": 0.01,
               "stuck_sweep_interval_s": 0.01, "stuck_margin_s": 0,
               "shutdown_grace_s": 0, "progress_log_interval_s": 0.01,
               "claim_batch_limit": 1, "record_batch_limit": 1,
               "db_statement_timeout_s": 0.1, "db_lock_timeout_s": 0.1,
               "db_connect_timeout_s": 2, "db_keepalives_idle_s": 1,
               "db_keepalives_interval_s": 1, "db_keepalives_count": 1,
               "db_tcp_user_timeout_s": 1, "db_call_timeout_s": 1},
    "stages": [{"name": "a", "timeout_s": 0.001, "timeout_max_s": 0.001,
                "max_cost": 0.000001, "max_output_bytes": 2,
                "retry": {"base_s": 0, "factor": 1, "max_delay_s": 0,
                          "max_snooze_s": 0.001,
                          "max_snoozed_total_s": 0.001,
                          "max_lost_leases": 0},
                "executor": {"cost": 0, "retry_after_s": 0,
                             "latency": {"ms": 0}}}]
  })");
  CHECK(low->stages[0].timeout() == std::chrono::milliseconds{1});
  auto high = parse_ok(R"({
    "worker": {"heartbeat_interval_s": 3600, "lease_s": 86400,
               "idle_poll_s": 3600, "rescue_interval_s": 86400,
               "stuck_sweep_interval_s": 86400, "stuck_margin_s": 86400,
               "shutdown_grace_s": 86400, "progress_log_interval_s": 86400,
               "claim_batch_limit": 10000, "record_batch_limit": 10000,
               "db_statement_timeout_s": 3600, "db_lock_timeout_s": 3600,
               "db_connect_timeout_s": 600, "db_keepalives_idle_s": 7200,
               "db_keepalives_interval_s": 600, "db_keepalives_count": 100,
               "db_tcp_user_timeout_s": 3600, "db_call_timeout_s": 7200},
    "stages": [{"name": "a", "timeout_s": 604800, "timeout_max_s": 604800,
                "max_cost": 1000000, "max_output_bytes": 67108864,
                "retry": {"base_s": 86400, "factor": 100,
                          "max_delay_s": 86400, "max_retries": 100,
                          "max_snooze_s": 86400,
                          "max_snoozed_total_s": 604800,
                          "max_lost_leases": 100},
                "executor": {"cost": 10000, "retry_after_s": 86400,
                             "latency": {"ms": 3600000}}},
               {"name": "b", "executor": {"kind": "command", "argv": ["x"],
                                          "kill_grace_s": 3600}}]
  })");
  CHECK(high->stages[0].timeout_max() == std::chrono::hours{168});
}

TEST_CASE("every number property has an upper bound", "[config]") {
  for (const auto& p : describe()) {
    if (p.type != property_type::number && p.type != property_type::integer)
      continue;
    if (p.name == "stages[].executor.seed"
        || p.name == "stages[].fallback.executor.seed") // any uint64
      continue;
    INFO(p.name << ": " << p.constraint);
    auto bounded = p.constraint.find("..") != std::string::npos
                   || p.constraint.find("<= ") != std::string::npos;
    CHECK(bounded);
  }
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
  CHECK_PROBLEM(r, "worker.lease_s", "must be >= 0.01, got 0");
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

TEST_CASE("the database call deadline must exceed the statement timeout",
          "[config]") {
  auto r = parse_bad(R"({"worker": {"db_statement_timeout_s": 60,
                                    "db_call_timeout_s": 60},
                         "stages": [{"name": "a"}]})");
  CHECK_PROBLEM(r, "worker.db_call_timeout_s",
                "must be > worker.db_statement_timeout_s (60), got 60");
  CHECK(r.problems.size() == 1);
  // The default statement timeout (30) counts when only the deadline is set.
  auto d = parse_bad(R"({"worker": {"db_call_timeout_s": 20},
                         "stages": [{"name": "a"}]})");
  CHECK_PROBLEM(d, "worker.db_call_timeout_s",
                "must be > worker.db_statement_timeout_s (30), got 20");
}

TEST_CASE("the timeout cap may not be below the timeout", "[config]") {
  auto r = parse_bad(R"({"stages": [
    {"name": "a", "timeout_s": 600, "timeout_max_s": 599},
    {"name": "b", "timeout_s": 100000}
  ]})");
  CHECK_PROBLEM(r, "stages[0].timeout_max_s",
                "must be >= timeout_s (600), got 599");
  CHECK_PROBLEM(r, "stages[1].timeout_max_s",
                "must be >= timeout_s (100000), got 86400");
  CHECK(r.problems.size() == 2);
  parse_ok(R"({"stages": [{"name": "a", "timeout_s": 600,
                           "timeout_max_s": 600}]})");
}

TEST_CASE("a simulated cost may not exceed the stage's max_cost", "[config]") {
  auto r = parse_bad(R"({"stages": [
    {"name": "a", "max_cost": 1, "executor": {"cost": 1.5}}]})");
  CHECK_PROBLEM(r, "stages[0].executor.cost",
                "must be <= max_cost (1), got 1.5");
  parse_ok(R"({"stages": [{"name": "a", "max_cost": 1,
                           "executor": {"cost": 1}}]})");
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

TEST_CASE("every property is documented in config/README.md as the "
          "registry describes it",
          "[config]") {
  auto readme = read_text(SPOOL_SOURCE_DIR "/config/README.md");
  REQUIRE_FALSE(readme.empty());
  for (const auto& p : describe()) {
    INFO(p.name);
    CHECK(readme.find("`" + p.name + "`") != std::string::npos);
    CHECK(readme.find(readme_row(p)) != std::string::npos);
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
  CHECK(factor.constraint == "1..100");
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
  CHECK(find("worker.heartbeat_interval_s").constraint == "0.01..3600");
  CHECK(find("worker.lease_s").constraint
        == "0.01..86400; > worker.heartbeat_interval_s");
  CHECK(find("stages[].max_cost").constraint == "> 0 and <= 1000000");
  CHECK(find("stages[].max_cost").default_text == "10000");
  CHECK(find("stages[].timeout_max_s").constraint
        == "0.001..604800; >= timeout_s");
  CHECK(find("stages[].retry.max_snooze_s").constraint
        == "> 0 and <= 86400");
  CHECK(find("stages[].retry.max_lost_leases").type
        == property_type::integer);
  CHECK(find("worker.db_call_timeout_s").constraint
        == "1..7200; > worker.db_statement_timeout_s");
  CHECK_FALSE(find("worker.db_call_timeout_s").needs_restart);
  CHECK_FALSE(find("worker.record_batch_limit").needs_restart);
}

// -- versions and restarts ----------------------------------------------------

TEST_CASE("the version is stable and changes with the configuration",
          "[config]") {
  auto a = parse_ok(seed_pipeline);
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
  auto base = parse_ok(seed_pipeline);
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
  SECTION("database connection settings need one; the call deadline not") {
    auto next = *base;
    next.worker.db_call_timeout_s = 90;
    next.worker.record_batch_limit = 10;
    CHECK(restart_required(*base, next).empty());
    next.worker.db_statement_timeout_s = 5;
    next.worker.db_keepalives_count = 9;
    CHECK(restart_required(*base, next)
          == names{"worker.db_statement_timeout_s",
                   "worker.db_keepalives_count"});
  }
}

TEST_CASE("restart-only properties are the locations, the database "
          "connection settings and the HTTP endpoints",
          "[config]") {
  names restart;
  for (const auto& p : describe())
    if (p.needs_restart)
      restart.push_back(p.name);
  CHECK(restart
        == names{"data_dir", "database_url", "worker.db_statement_timeout_s",
                 "worker.db_lock_timeout_s", "worker.db_connect_timeout_s",
                 "worker.db_keepalives_idle_s",
                 "worker.db_keepalives_interval_s",
                 "worker.db_keepalives_count", "worker.db_tcp_user_timeout_s", "http",
                 "http.listen", "http.cluster_metrics", "api", "api.listen",
                 "api.requests_per_s", "api.burst", "api.max_request_bytes"});
}

// -- topology and helpers -----------------------------------------------------

TEST_CASE("a snapshot answers topology questions from its after lists",
          "[config]") {
  auto s = parse_ok(seed_pipeline);
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
  CHECK(to_duration(1e300) == max_duration);
  CHECK(to_duration(std::numeric_limits<double>::infinity()) == max_duration);
  CHECK(to_duration(std::numeric_limits<double>::quiet_NaN())
        == milliseconds{0});
  CHECK(to_duration(9.3e9) == max_duration);
  CHECK(to_duration(604800) == milliseconds{604800000});
}

TEST_CASE("the longest duration converts to nanoseconds and adds to now() "
          "without overflow",
          "[config]") {
  using namespace std::chrono;
  auto ns = duration_cast<nanoseconds>(max_duration);
  CHECK(ns.count() > 0);
  CHECK(ns.count() / 1000000 == max_duration.count());
  // Several times over on top of the system clock, with room to spare.
  auto headroom = nanoseconds::max() - system_clock::now().time_since_epoch();
  CHECK(headroom > 4 * ns);
  CHECK(max_duration > duration_cast<milliseconds>(hours{24 * 7}));
}

// -- http -----------------------------------------------------------------------

TEST_CASE("http.listen takes host:port, [v6]:port or off, and names what is wrong",
          "[config]") {
  auto d = parse_ok(R"({"stages": [{"name": "a"}]})");
  CHECK(d->http.listen == "127.0.0.1:9464");
  CHECK_FALSE(d->http.cluster_metrics);
  for (const char* ok : {"0.0.0.0:9464", "[::1]:0", "localhost:80", "off", ":9000"}) {
    INFO(ok);
    auto s = parse_ok(std::string{R"({"http": {"listen": ")"} + ok
                      + R"(", "cluster_metrics": true}, "stages": [{"name": "a"}]})");
    CHECK(s->http.listen == ok);
    CHECK(s->http.cluster_metrics);
  }
  auto bad = [](const std::string& listen) {
    return parse(R"({"http": {"listen": ")" + listen
                         + R"("}, "stages": [{"name": "a"}]})");
  };
  CHECK_PROBLEM(bad("localhost"), "http.listen", "expected \"host:port\"");
  CHECK_PROBLEM(bad("127.0.0.1:65536"), "http.listen", "port must be a number from 0 to 65535");
  CHECK_PROBLEM(bad("127.0.0.1:http"), "http.listen", "port must be a number");
  CHECK_PROBLEM(bad("::1:80"), "http.listen", "IPv6 address needs brackets");
  CHECK_PROBLEM(bad("a b:80"), "http.listen", "the host may hold");
  CHECK_PROBLEM(parse(R"({"http": {"cluster_metrics": "yes"}, "stages": [{"name": "a"}]})"),
                "http.cluster_metrics", "must be true or false");
}

TEST_CASE("approval is for a stage that waits for others", "[config]") {
  auto s = parse_ok(R"({"stages": [{"name": "a"}, {"name": "b", "after": ["a"],
                        "approval": true}]})");
  CHECK_FALSE(s->stages[0].approval);
  CHECK(s->stages[1].approval);
  CHECK_PROBLEM(parse(R"({"stages": [{"name": "a", "approval": true}]})"), "stages[0].approval",
                "needs after");
}
