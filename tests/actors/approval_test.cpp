// The approval gate with real workers: a stage with `approval: true` is
// never claimed before its task is approved, the task waits in
// awaiting_approval meanwhile (its other branches go on), `spool approve`
// wakes the workers at once (NOTIFY, not their poll), and `spool reject`
// cancels the task with the reason.

#include "tests/support/worker_fixture.hpp"

#include <csignal>

using namespace spool;
using namespace spool::test;

namespace {

/// storyboard -> (video behind the gate, narration) -> assembly. With a
/// poll of 60 s only a NOTIFY can start work within the test's deadlines.
std::string gated_config(double idle_poll_s = 60) {
  return temp_file(R"({"worker": {"idle_poll_s": )" + std::to_string(idle_poll_s)
                   + R"(, "heartbeat_interval_s": 0.5,
    "rescue_interval_s": 0.5, "shutdown_grace_s": 5, "lease_s": 3},
    "stages": [
      {"name": "storyboard", "executor": {"latency": {"dist": "fixed", "ms": 5}}},
      {"name": "video", "after": ["storyboard"], "approval": true,
       "executor": {"latency": {"dist": "fixed", "ms": 5}}},
      {"name": "narration", "after": ["storyboard"],
       "executor": {"latency": {"dist": "fixed", "ms": 5}}},
      {"name": "assembly", "after": ["video", "narration"],
       "executor": {"latency": {"dist": "fixed", "ms": 5}}}]})");
}

} // namespace

TEST_CASE_METHOD(worker_fixture,
                 "a gated stage is never claimed before approval; approve wakes workers at "
                 "once and reject cancels with the reason",
                 "[db][worker][approval]") {
  auto cfg = gated_config();
  enqueue(cfg, 3);
  REQUIRE(scalar("SELECT count(*) FROM stage_runs WHERE needs_approval") == 3);
  REQUIRE(scalar("SELECT count(*) FROM stage_runs WHERE needs_approval AND stage <> 'video'")
          == 0);
  spool_process w{{"run", "--config", cfg}, env};

  // Every task reaches the gate; the other branch goes on regardless.
  REQUIRE(wait_for("SELECT count(*) FROM tasks WHERE state = 'awaiting_approval'", 3));
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE stage = 'narration' AND state = 'done'",
                   3));
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'awaiting_approval'") == 3);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE stage = 'video' AND state = 'blocked' "
               "AND deps_pending = 0")
        == 3);
  // Some time with nothing to do but the gated runs: none is claimed.
  std::this_thread::sleep_for(std::chrono::milliseconds{1500});
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE stage IN ('video', 'assembly')") == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE approved") == 0);

  auto ids = conn.exec("SELECT id FROM tasks ORDER BY id");
  auto first = ids.str(0, 0), second = ids.str(1, 0), third = ids.str(2, 0);

  // Approved: the video starts at once (the poll is a minute away).
  auto approved = run_spool({"approve", first, "--note", "storyboard ok"}, env);
  INFO(approved.out << approved.err);
  REQUIRE(approved.exit_code == 0);
  CHECK_THAT(approved.out, Catch::Contains("approved"));
  REQUIRE(wait_for("SELECT count(*) FROM tasks WHERE id = " + first + " AND state = 'completed'",
                   1, 20));
  CHECK(scalar("SELECT count(*) FROM tasks WHERE id = " + first
               + " AND approved AND reviewed_by LIKE 'cli:%' AND review_note = 'storyboard ok'")
        == 1);
  // The video started after the approval, never before.
  CHECK(scalar("SELECT count(*) FROM stage_attempts a JOIN stage_runs r ON r.id = a.stage_run_id "
               "JOIN tasks t ON t.id = r.task_id WHERE r.stage = 'video' AND t.id = "
               + first + " AND a.started_at >= t.reviewed_at")
        == 1);

  // Rejected: cancelled with the reason; its gated run never ran.
  auto rejected = run_spool({"reject", second, "--reason", "off brand"}, env);
  INFO(rejected.out << rejected.err);
  REQUIRE(rejected.exit_code == 0);
  CHECK(text("SELECT state::text FROM tasks WHERE id = " + second) == "cancelled");
  CHECK(text("SELECT error_message FROM tasks WHERE id = " + second) == "rejected: off brand");
  CHECK(scalar("SELECT count(*) FROM tasks WHERE id = " + second + " AND approved") == 0);
  CHECK(text("SELECT string_agg(state::text, ',' ORDER BY stage) FROM stage_runs WHERE task_id = "
             + second + " AND stage IN ('video', 'assembly')")
        == "cancelled,cancelled");
  // A finished task has nothing to decide; an unknown one is named.
  auto late = run_spool({"approve", second}, env);
  CHECK(late.exit_code == 1);
  CHECK_THAT(late.err, Catch::Contains("has finished"));
  auto none = run_spool({"approve", "987654"}, env);
  CHECK(none.exit_code == 1);
  CHECK_THAT(none.err, Catch::Contains("no task 987654"));
  auto no_reason = run_spool({"reject", third}, env);
  CHECK(no_reason.exit_code == 2);
  auto empty_reason = run_spool({"reject", third, "--reason", ""}, env);
  CHECK(empty_reason.exit_code == 2);
  CHECK_THAT(empty_reason.err, Catch::Contains("--reason: must not be empty"));
  CHECK(text("SELECT state::text FROM tasks WHERE id = " + third) == "awaiting_approval");

  // Approving twice is harmless.
  REQUIRE(run_spool({"approve", third}, env).exit_code == 0);
  auto again = run_spool({"approve", third}, env);
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.out, Catch::Contains("approved already"));
  REQUIRE(wait_for("SELECT count(*) FROM tasks WHERE id = " + third + " AND state = 'completed'",
                   1, 20));
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE stage = 'video'") == 2);

  w.signal(SIGTERM);
  CHECK(w.wait(30) == 0);
}

TEST_CASE_METHOD(worker_fixture,
                 "a task approved before it reaches the gate passes it without waiting",
                 "[db][worker][approval]") {
  auto cfg = gated_config(0.2);
  enqueue(cfg, 1);
  auto id = text("SELECT id::text FROM tasks");
  REQUIRE(run_spool({"approve", id}, env).exit_code == 0);
  CHECK(text("SELECT state::text FROM tasks") == "queued");
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  REQUIRE(w.wait(60) == 0);
  CHECK(text("SELECT state::text FROM tasks") == "completed");
}
