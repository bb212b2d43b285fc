// `spool run` end to end: real worker processes against a real PostgreSQL.
// Timing only enters as lower bounds the queue itself guarantees (a retry
// never starts before its backoff); everything else is counted.

#include "runtime/pg/connection.hpp"
#include "runtime/store/store.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/test_db.hpp"
#include "tests/support/worker_fixture.hpp"
#include "tests/support/wait.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <thread>

using namespace spool;
using namespace std::chrono_literals;
using test::spool_process;

using test::worker_config;
using test::worker_fixture;

TEST_CASE_METHOD(worker_fixture, "no stage ever runs more than its limit at once",
                 "[db][worker]") {
  auto cfg = worker_config(R"(
    {"name": "a", "max_concurrent": 3, "executor": {"latency": {"dist": "uniform",
      "min_ms": 20, "max_ms": 80}}},
    {"name": "b", "after": ["a"], "max_concurrent": 2, "executor": {"latency": {"dist":
      "uniform", "min_ms": 20, "max_ms": 60}}})");
  enqueue(cfg, 30, 4);
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  REQUIRE(w.wait(120) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 30);
  auto a = max_overlap("a");
  auto b = max_overlap("b");
  CHECK(a <= 3);
  CHECK(b <= 2);
  CHECK(a == 3); // and the limit was used
  std::remove(cfg.c_str());
}

TEST_CASE_METHOD(worker_fixture, "retries wait their backoff and stop at the limit",
                 "[db][worker]") {
  auto cfg = worker_config(R"(
    {"name": "a", "max_concurrent": 2, "retry": {"max_retries": 3, "base_s": 0.2,
      "factor": 2, "jitter": 0}, "executor": {"errors": {"transient": 1}}})");
  enqueue(cfg, 2);
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  REQUIRE(w.wait(60) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'failed'") == 2);
  CHECK(scalar("SELECT count(*) FROM stage_attempts") == 8); // 1 + 3 retries each
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE failed_attempts = 4") == 2);
  // The k-th retry starts no sooner than 0.2 s * 2^(k-1) after the failure.
  auto gaps = conn.exec(
    "SELECT attempt, extract(epoch FROM started_at - lag(finished_at) OVER w)::float8 "
    "FROM stage_attempts WINDOW w AS (PARTITION BY stage_run_id ORDER BY attempt) "
    "ORDER BY stage_run_id, attempt");
  REQUIRE(gaps.rows() == 8);
  for (int i = 0; i < gaps.rows(); ++i) {
    auto attempt = gaps.i64(i, 0);
    if (attempt == 1)
      continue;
    double expected = 0.2 * (1 << (attempt - 2));
    CHECK(gaps.f64(i, 1) >= expected - 0.01);
  }
  std::remove(cfg.c_str());
}

TEST_CASE_METHOD(worker_fixture, "a worker kills a hung command at the stage timeout, leaving no process",
                 "[db][worker]") {
  auto pids = test::temp_file("", ".pids");
  auto cfg = worker_config(R"(
    {"name": "a", "max_concurrent": 2, "timeout_s": 1, "retry": {"max_retries": 0},
     "executor": {"kind": "command", "kill_grace_s": 0.5, "argv": ["sh", "-c",
       "trap '' TERM; sleep 60 & echo $! >> )" + pids + R"(; echo $$ >> )" + pids +
                           R"(; wait"]}})");
  enqueue(cfg, 2);
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  REQUIRE(w.wait(60) == 0);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'failed' AND "
               "error_class = 'timeout'") == 2);
  std::ifstream in{pids};
  std::vector<int> seen;
  for (int pid; in >> pid;)
    seen.push_back(pid);
  CHECK(seen.size() == 4); // two shells, two sleeps
  // Reaping of orphaned grandchildren by init can lag a little.
  auto deadline = std::chrono::steady_clock::now() + 15s;
  for (int pid : seen) {
    while (::kill(pid, 0) == 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(50ms);
    CHECK(::kill(pid, 0) == -1);
  }
  std::remove(pids.c_str());
  std::remove(cfg.c_str());
}

TEST_CASE_METHOD(worker_fixture, "a stage actor that crashes is replaced and its job retried",
                 "[db][worker]") {
  // One actor: without a replacement nothing after the first crash would run.
  auto cfg = worker_config(R"(
    {"name": "a", "max_concurrent": 1, "retry": {"max_retries": 10, "base_s": 0},
     "executor": {"errors": {"crash": 0.4}, "seed": 7}})");
  enqueue(cfg, 10);
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  REQUIRE(w.wait(60) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 10);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE error_message LIKE "
               "'stage actor crashed%'")
        > 0);
  CHECK_THAT(w.output(), Catch::Contains("replacing it"));
}

TEST_CASE_METHOD(worker_fixture, "SIGTERM drains: leases are handed back and claimed at once",
                 "[db][worker]") {
  auto slow = worker_config(R"(
    {"name": "a", "max_concurrent": 3, "executor": {"latency": {"dist": "fixed",
      "ms": 60000}}})");
  auto fast = worker_config(R"(
    {"name": "a", "max_concurrent": 3, "executor": {"latency": {"dist": "fixed",
      "ms": 10}}})");
  enqueue(slow, 3);
  spool_process first{{"run", "--config", slow}, env};
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE state = 'running'", 3));
  first.signal(SIGTERM);
  REQUIRE(first.wait(30) == 0);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'ready' AND lease_owner IS NULL "
               "AND failed_attempts = 0")
        == 3);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE outcome = 'released'") == 3);
  CHECK(scalar("SELECT count(*) FROM workers WHERE stopped_at IS NOT NULL") == 1);

  spool_process second{{"run", "--config", fast, "--exit-when-idle"}, env};
  REQUIRE(second.wait(30) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 3);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE attempt = 2") == 3);
  std::remove(slow.c_str());
  std::remove(fast.c_str());
}

TEST_CASE_METHOD(worker_fixture, "after kill -9 of a worker mid-run a second one completes "
                                 "everything",
                 "[db][worker]") {
  auto slow = worker_config(R"(
    {"name": "a", "max_concurrent": 4, "executor": {"latency": {"dist": "fixed",
      "ms": 60000}}},
    {"name": "b", "after": ["a"], "max_concurrent": 4})",
                            1.5);
  auto fast = worker_config(R"(
    {"name": "a", "max_concurrent": 4, "executor": {"latency": {"dist": "fixed", "ms": 5}}},
    {"name": "b", "after": ["a"], "max_concurrent": 4})");
  enqueue(slow, 6);
  spool_process first{{"run", "--config", slow}, env};
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE state = 'running'", 4));
  first.signal(SIGKILL);
  CHECK(first.wait(10) == 128 + SIGKILL);

  spool_process second{{"run", "--config", fast, "--exit-when-idle"}, env};
  REQUIRE(second.wait(60) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 6);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE outcome = 'lost'") == 4);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state <> 'done'") == 0);
}

TEST_CASE_METHOD(worker_fixture, "more than 20 videos are in flight at once", "[db][worker]") {
  auto cfg = worker_config(R"(
    {"name": "a", "max_concurrent": 25, "executor": {"latency": {"dist": "fixed",
      "ms": 1000}}})");
  enqueue(cfg, 30, 5);
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  REQUIRE(w.wait(60) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 30);
  auto overlap = max_overlap("a");
  CHECK(overlap > 20);
  CHECK(overlap <= 25);
}

TEST_CASE_METHOD(worker_fixture, "stages start only after every stage they depend on finished",
                 "[db][worker]") {
  auto cfg = worker_config(R"(
    {"name": "asset_gen", "max_concurrent": 3, "executor": {"latency": {"dist": "uniform",
      "min_ms": 5, "max_ms": 40}}},
    {"name": "video_gen", "after": ["asset_gen"], "max_concurrent": 2},
    {"name": "narration", "after": ["asset_gen"], "max_concurrent": 4, "executor": {"latency":
      {"dist": "uniform", "min_ms": 5, "max_ms": 30}}},
    {"name": "assembly", "after": ["video_gen", "narration"], "max_concurrent": 2})");
  enqueue(cfg, 12, 3);
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  REQUIRE(w.wait(60) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 12);
  // For every run: its first attempt began after the last attempt of each
  // dependency ended.
  CHECK(scalar(R"(
    SELECT count(*) FROM stage_runs r
      JOIN LATERAL unnest(r.depends_on) AS dep(stage) ON true
      JOIN stage_runs d ON d.task_id = r.task_id AND d.stage = dep.stage
     WHERE (SELECT min(started_at) FROM stage_attempts WHERE stage_run_id = r.id)
         < (SELECT max(finished_at) FROM stage_attempts WHERE stage_run_id = d.id))")
        == 0);
  CHECK(scalar("SELECT count(*) FROM stage_runs") == 48);
}

TEST_CASE_METHOD(worker_fixture, "a result that arrives after the lease was lost is refused",
                 "[db][worker]") {
  auto cfg = worker_config(R"(
    {"name": "a", "max_concurrent": 1, "executor": {"latency": {"dist": "fixed",
      "ms": 2500}}})");
  enqueue(cfg, 1);
  spool_process w{{"run", "--config", cfg}, env};
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE state = 'running'", 1));
  // Another worker takes the run over, as if this one had stopped heartbeating.
  conn.exec("UPDATE stage_runs SET lease_expires_at = now() - interval '1 second'");
  conn.exec("SELECT * FROM spool_rescue(10)");
  store::store q{conn};
  auto stolen = q.claim("a", 1, "thief", 60s);
  REQUIRE(stolen.size() == 1);
  REQUIRE(wait_for("SELECT count(*) FROM stage_attempts WHERE worker_id <> 'thief' AND "
                   "finished_at IS NOT NULL",
                   1));
  // The first worker's heartbeat tells it the lease was lost (it stops the
  // execution, recording nothing), or its late result is refused by the
  // fence: either way nothing changes.
  REQUIRE(test::eventually([&] {
    auto out = w.output();
    return out.find("lease lost") != std::string::npos
           || out.find("refused") != std::string::npos;
  }));
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'running' AND "
               "lease_owner = 'thief'")
        == 1);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE output IS NOT NULL") == 0);
  w.signal(SIGTERM);
  CHECK(w.wait(30) == 0);
}

TEST_CASE_METHOD(worker_fixture, "cancelling a task stops its running command", "[db][worker]") {
  auto pids = test::temp_file("", ".pids");
  auto cfg = worker_config(R"(
    {"name": "a", "max_concurrent": 1, "timeout_s": 120, "executor": {"kind": "command",
      "kill_grace_s": 0.5, "argv": ["sh", "-c", "echo $$ >> )" + pids + R"(; exec sleep 60"]}})");
  enqueue(cfg, 1);
  spool_process w{{"run", "--config", cfg}, env};
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE state = 'running'", 1));
  int pid = 0;
  for (int i = 0; i < 200 && pid == 0; ++i) {
    std::ifstream in{pids};
    in >> pid;
    if (pid == 0)
      std::this_thread::sleep_for(20ms);
  }
  REQUIRE(pid > 0);
  auto res = test::run_spool({"cancel", std::to_string(scalar("SELECT id FROM tasks"))}, env);
  CHECK(res.exit_code == 0);
  auto deadline = std::chrono::steady_clock::now() + 15s;
  while (::kill(pid, 0) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  CHECK(::kill(pid, 0) == -1);
  CHECK(conn.exec("SELECT state::text FROM tasks").str(0, 0) == "cancelled");
  w.signal(SIGTERM);
  CHECK(w.wait(30) == 0);
  CHECK_THAT(w.output(), Catch::Contains("cancelled; stopping it"));
  std::remove(pids.c_str());
  std::remove(cfg.c_str());
}

TEST_CASE_METHOD(worker_fixture, "a second signal exits at once and takes the stage programs "
                                 "along",
                 "[db][worker]") {
  auto pids = test::temp_file("", ".pids");
  // A grace far longer than the test: only the second signal can end it.
  auto cfg = worker_config(R"(
    {"name": "a", "max_concurrent": 2, "timeout_s": 120, "executor": {"kind": "command",
      "argv": ["sh", "-c", "trap '' TERM; echo $$ >> )" + pids + R"(; sleep 60"]}})",
                           3, 60);
  enqueue(cfg, 2);
  spool_process w{{"run", "--config", cfg}, env};
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE state = 'running'", 2));
  std::vector<int> seen;
  for (int i = 0; i < 200 && seen.size() < 2; ++i) {
    std::ifstream in{pids};
    seen.clear();
    for (int pid; in >> pid;)
      seen.push_back(pid);
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(seen.size() == 2);
  w.signal(SIGTERM); // drain: the programs ignore TERM and keep running
  REQUIRE(test::eventually([&] { return w.output().find("draining") != std::string::npos; }));
  CHECK(w.running());
  w.signal(SIGTERM);
  CHECK(w.wait(10) == 128 + SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + 15s;
  for (int pid : seen) {
    while (::kill(pid, 0) == 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(20ms);
    CHECK(::kill(pid, 0) == -1);
  }
  // Its leases stay until they expire; a rescuer then returns the runs.
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'running'") == 2);
  std::remove(pids.c_str());
  std::remove(cfg.c_str());
}

TEST_CASE_METHOD(worker_fixture,
                 "at trace level a worker logs every step of each job's hot path, in order",
                 "[db][worker]") {
  auto cfg = worker_config(R"(
    {"name": "a", "max_concurrent": 2, "executor": {"latency": {"dist": "fixed", "ms": 5}}})");
  enqueue(cfg, 3, 3);
  spool_process w{{"--log-level", "trace", "run", "--config", cfg, "--exit-when-idle"}, env};
  REQUIRE(w.wait(60) == 0);
  REQUIRE(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 3);
  // For each run: "step <name> <run id> <us>" for claimed, start, result and
  // recorded, with non-decreasing times (what bench/pickup_latency reads).
  auto log = w.output();
  auto runs = conn.exec("SELECT id FROM stage_runs ORDER BY id");
  for (int i = 0; i < runs.rows(); ++i) {
    auto id = runs.str(i, 0);
    long long last = 0;
    for (const char* step : {"claimed", "start", "result", "recorded"}) {
      auto needle = std::string{" step "} + step + " " + id + " ";
      auto at = log.find(needle);
      INFO("run " << id << ", step " << step);
      REQUIRE(at != std::string::npos);
      long long us = std::atoll(log.c_str() + at + needle.size());
      CHECK(us >= last);
      last = us;
    }
  }
  // The stage-keyed steps name the stage.
  CHECK(log.find(" step claim a ") != std::string::npos);
  CHECK(log.find(" step claim_sql_done a ") != std::string::npos);
  std::remove(cfg.c_str());
}
