// A command stage's configuration turned into what its program gets: the
// environment rule (allow list, pass_env, env) seen by a real program.

#include "runtime/config/config.hpp"
#include "runtime/exec/command_runner.hpp"
#include "runtime/exec/from_config.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <future>
#include <map>
#include <sstream>
#include <string>

using namespace std::chrono_literals;
using namespace spool;

namespace {

/// Parses a one-stage config whose executor is `executor` (JSON).
std::shared_ptr<const config::snapshot> stage_config(const std::string& executor) {
  auto r = config::parse(R"({"stages": [{"name": "a", "executor": )" + executor + "}]}");
  std::string problems;
  for (const auto& p : r.problems)
    problems += config::to_string(p) + "\n";
  INFO(problems);
  REQUIRE(r.ok());
  return r.config;
}

/// Runs the stage's program once and returns its environment as printed by
/// `env`.
std::map<std::string, std::string> environment_of(const config::command_config& c) {
  exec::command_runner runner;
  auto spec = exec::command_spec_of(c, "{}", 30s);
  auto done = std::make_shared<std::promise<exec::command_result>>();
  auto result = done->get_future();
  runner.start(std::move(spec), [done](exec::command_result r) { done->set_value(std::move(r)); });
  REQUIRE(result.wait_for(60s) == std::future_status::ready);
  auto r = result.get();
  REQUIRE(r.how == exec::command_result::ending::exited);
  REQUIRE(r.exit_code == 0);
  std::map<std::string, std::string> env;
  std::istringstream lines{r.stdout_data};
  for (std::string line; std::getline(lines, line);)
    env[line.substr(0, line.find('='))] = line.substr(line.find('=') + 1);
  return env;
}

} // namespace

TEST_CASE("a stage program gets the allow list, its pass_env names and its env, "
          "never the worker's secrets",
          "[exec][config]") {
  ::setenv("SPOOL_DATABASE_URL", "postgresql://spool:secret@db/spool", 1);
  ::setenv("PGPASSWORD", "secret", 1);
  ::setenv("PGHOST", "db.internal", 1);
  ::setenv("GEMINI_API_KEY", "key-123", 1);
  ::setenv("OTHER_API_KEY", "not passed", 1);
  ::unsetenv("ABSENT_API_KEY");
  auto snap = stage_config(R"({"kind": "command", "argv": ["env"],
    "pass_env": ["GEMINI_API_KEY", "ABSENT_API_KEY", "PGHOST"],
    "env": {"PGHOST": "explicit", "IMAGE_API": "gemini"}})");
  auto env = environment_of(snap->stages[0].executor.command);
  for (auto name : {"SPOOL_DATABASE_URL", "PGPASSWORD", "PGHOST", "GEMINI_API_KEY",
                    "OTHER_API_KEY"})
    ::unsetenv(name);
  CHECK(env.count("SPOOL_DATABASE_URL") == 0);
  CHECK(env.count("PGPASSWORD") == 0);
  CHECK(env.count("OTHER_API_KEY") == 0);
  CHECK(env.count("ABSENT_API_KEY") == 0);
  CHECK(env["GEMINI_API_KEY"] == "key-123");
  CHECK(env["PGHOST"] == "explicit"); // env wins over a passed name
  CHECK(env["IMAGE_API"] == "gemini");
  CHECK(env["PATH"] == std::getenv("PATH"));
  CHECK(env.count("SPOOL_JOB_TOKEN") == 1);
}

TEST_CASE("pass_env defaults to nothing and refuses what is not a variable name",
          "[exec][config]") {
  auto snap = stage_config(R"({"kind": "command", "argv": ["env"]})");
  CHECK(snap->stages[0].executor.command.pass_env.empty());
  auto bad = config::parse(R"({"stages": [{"name": "a", "executor": {"kind": "command",
    "argv": ["env"], "pass_env": ["GOOD_NAME", "BAD=NAME"]}}]})");
  REQUIRE_FALSE(bad.ok());
  REQUIRE(bad.problems.size() == 1);
  CHECK(bad.problems[0].path == "stages[0].executor.pass_env");
  CHECK(bad.problems[0].message
        == "element 1 must be a variable name ([A-Za-z_][A-Za-z0-9_]*), got 'BAD=NAME'");
  auto simulate = config::parse(R"({"stages": [{"name": "a", "executor": {"pass_env": ["X"]}}]})");
  CHECK_FALSE(simulate.ok()); // command executor only
}
