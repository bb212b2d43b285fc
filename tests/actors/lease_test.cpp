// A worker's contract with the store, end to end with real `spool run`
// processes: poisoned results fail only their own run, a lost lease stops its
// execution, claims the worker never got are handed back, and idempotency
// keys change only when a provider could have seen a result.

#include "tests/support/worker_fixture.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <sstream>

using namespace spool;
using namespace std::chrono_literals;
using test::spool_process;
using test::worker_config;
using test::worker_fixture;

namespace {

/// A command stage running `python3 -c <script>`.
std::string python_stage(const std::string& name, const std::string& script,
                         const std::string& extra = "") {
  std::string escaped;
  for (char c : script) {
    if (c == '"' || c == '\\')
      escaped += '\\';
    if (c == '\n')
      escaped += "\\n";
    else
      escaped += c;
  }
  return R"({"name": ")" + name + R"(", "max_concurrent": 4)" + extra
         + R"(, "executor": {"kind": "command", "argv": ["python3", "-c", ")" + escaped
         + R"("]}})";
}

bool process_gone(int pid, std::chrono::seconds within) {
  auto deadline = std::chrono::steady_clock::now() + within;
  while (::kill(pid, 0) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  return ::kill(pid, 0) == -1;
}

} // namespace

TEST_CASE_METHOD(worker_fixture,
                 "a poisoned result fails its own run while the good ones beside it complete",
                 "[db][worker][lease]") {
  // One script; the payload says which poison to print.
  auto cfg = worker_config(python_stage("a",
                                        "import json, sys\n"
                                        "p = json.load(sys.stdin)['payload'].get('poison', '')\n"
                                        "out = {'cost': '{\"status\":\"ok\",\"output\":{},\"cost\":1000000000}',\n"
                                        " 'nul': '{\"status\":\"ok\",\"output\":{\"x\":\"a\\\\u0000b\"}}',\n"
                                        " 'big': json.dumps({'status': 'ok', 'output': {'x': 'y' * 2000000}}),\n"
                                        " 'snooze': '{\"status\":\"error\",\"class\":\"rate_limited\",\"retry_after_s\":1e12}'}\n"
                                        "print(out.get(p, '{\"status\":\"ok\",\"output\":{\"n\":1},\"cost\":0.5}'))\n",
                                        R"(, "retry": {"max_snooze_s": 0.2, "max_snoozed_total_s": 0.5})"));
  const char* poisons[] = {"cost", "nul", "big", "snooze"};
  enqueue_each(cfg, 24, 3, [&](int i) {
    return i < 4 ? std::string{R"({"poison":")"} + poisons[i] + "\"}" : std::string{"{}"};
  });
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  REQUIRE(w.wait(120) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 20);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'failed'") == 4);
  auto error_of = [&](const char* poison) {
    return text(std::string{"SELECT coalesce(error_message, '') FROM tasks WHERE payload ->> "
                            "'poison' = '"}
                + poison + "'");
  };
  CHECK_THAT(error_of("cost"), Catch::Contains("cost") && Catch::Contains("max_cost"));
  CHECK_THAT(error_of("nul"), Catch::Contains("NUL"));
  CHECK_THAT(error_of("big"), Catch::Contains("max_output_bytes"));
  CHECK_THAT(error_of("snooze"), Catch::Contains("max_snoozed_total_s"));
  CHECK(text("SELECT error_class FROM stage_runs r JOIN tasks t ON t.id = r.task_id WHERE "
             "t.payload ->> 'poison' = 'snooze'")
        == "rate_limited");
  // The good ones were recorded in full, cost included.
  CHECK(text("SELECT sum(actual_cost)::text FROM tasks WHERE state = 'completed'")
        == "10.000000");
  // Logged errors are one line each: no function source.
  CHECK(w.output().find("WITH input AS") == std::string::npos);
  std::remove(cfg.c_str());
}

TEST_CASE_METHOD(worker_fixture,
                 "a worker told it lost a lease stops that execution and records nothing",
                 "[db][worker][lease]") {
  auto pids = test::temp_file("", ".pids");
  auto cfg = worker_config(R"({"name": "a", "max_concurrent": 1, "timeout_s": 120,
     "executor": {"kind": "command", "kill_grace_s": 0.5, "argv": ["sh", "-c",
       "echo $$ >> )" + pids + R"(; sleep 120"]}})",
                           30);
  enqueue(cfg, 1);
  spool_process w{{"run", "--config", cfg}, env};
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE state = 'running'", 1));
  int pid = 0;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (pid == 0 && std::chrono::steady_clock::now() < deadline) {
    std::ifstream in{pids};
    in >> pid;
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(pid > 0);
  // Another worker took it over (as a rescue and a re-claim would).
  conn.exec("UPDATE stage_runs SET lease_owner = 'someone-else', lease_token = 1");
  CHECK(process_gone(pid, 20s));
  deadline = std::chrono::steady_clock::now() + 10s;
  while (w.output().find("lease lost") == std::string::npos
         && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  CHECK_THAT(w.output(), Catch::Contains("lease lost"));
  // Nothing was recorded for it: the new owner's lease is untouched.
  CHECK(text("SELECT state::text || ' ' || lease_owner FROM stage_runs") == "running someone-else");
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE outcome IS NOT NULL") == 0);
  CHECK(w.running());
  w.signal(SIGTERM);
  CHECK(w.wait(30) == 0);
  std::remove(pids.c_str());
  std::remove(cfg.c_str());
}

TEST_CASE_METHOD(worker_fixture,
                 "runs claimed for a worker that is not running them are handed back at once",
                 "[db][worker][lease]") {
  // The worker serves "a" only; a run of "b" is claimed in its name, as a
  // claim whose reply never reached it would be.
  auto worker_cfg = worker_config(R"({"name": "a", "max_concurrent": 1})");
  auto other_cfg = worker_config(R"({"name": "b", "max_concurrent": 1})");
  enqueue(other_cfg, 1);
  spool_process w{{"run", "--config", worker_cfg}, env};
  REQUIRE(wait_for("SELECT count(*) FROM workers", 1));
  auto id = text("SELECT id FROM workers");
  REQUIRE(conn.query("SELECT run_id FROM spool_claim('b', 1, $1, 60000, 0)", id).rows() == 1);
  REQUIRE(wait_for("SELECT count(*) FROM stage_attempts WHERE outcome = 'released'", 1));
  CHECK(text("SELECT state::text FROM stage_runs") == "ready");
  CHECK_THAT(text("SELECT error_message FROM stage_attempts"), Catch::Contains("reply"));
  CHECK(scalar("SELECT failed_attempts + lost_attempts FROM stage_runs") == 0);
  w.signal(SIGTERM);
  CHECK(w.wait(30) == 0);
  std::remove(worker_cfg.c_str());
  std::remove(other_cfg.c_str());
}

TEST_CASE_METHOD(worker_fixture,
                 "the idempotency key changes after a retry but not after a snooze",
                 "[db][worker][lease]") {
  auto keys = test::temp_file("", ".keys");
  // Attempt 1 is rate limited, attempt 2 fails, attempt 3 succeeds.
  auto cfg = worker_config(python_stage("a",
                                        "import json, sys\n"
                                        "j = json.load(sys.stdin)\n"
                                        "open('" + keys + "', 'a').write(j['idempotency_key'] + '\\n')\n"
                                        "print({1: '{\"status\":\"error\",\"class\":\"rate_limited\",\"retry_after_s\":0.05}',\n"
                                        "       2: '{\"status\":\"error\",\"class\":\"transient\",\"message\":\"boom\"}'}\n"
                                        "      .get(j['attempt'], '{\"status\":\"ok\"}'))\n",
                                        R"(, "retry": {"base_s": 0.05, "jitter": 0})"));
  enqueue(cfg, 1);
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  REQUIRE(w.wait(60) == 0);
  REQUIRE(text("SELECT state::text FROM tasks") == "completed");
  auto task = std::to_string(scalar("SELECT id FROM tasks"));
  std::ifstream in{keys};
  std::vector<std::string> seen;
  for (std::string line; std::getline(in, line);)
    seen.push_back(line);
  REQUIRE(seen.size() == 3);
  CHECK(seen[0] == task + ":a:1");
  CHECK(seen[1] == task + ":a:1"); // the snooze: the provider refused the call
  CHECK(seen[2] == task + ":a:2"); // after a failure it could have seen
  std::remove(keys.c_str());
  std::remove(cfg.c_str());
}
