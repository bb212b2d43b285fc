// What a worker and the database agree on: lease tokens, the heartbeat that
// names exactly what a worker runs, lost leases counted apart, the stuck
// sweep that rescues by itself, and a recorder that isolates a bad record.

#include "runtime/pg/error.hpp"
#include "runtime/store/maintenance.hpp"
#include "runtime/store/store.hpp"
#include "tests/support/queue_fixture.hpp"

#include <catch2/catch.hpp>

#include <thread>

using namespace spool;
using namespace std::chrono_literals;
using store::held_claim;
using store::heartbeat_note;
using store::record_kind;
using test::queue_fixture;

namespace {

held_claim held(const store::claimed_run& r) {
  return {r.run_id, r.attempt, r.lease_token};
}

store::outcome_record ok(const store::claimed_run& r, std::string output = "{}") {
  auto o = store::outcome_record::for_claim(r, record_kind::ok);
  o.output = std::move(output);
  return o;
}

std::vector<held_claim> of_kind(const std::vector<heartbeat_note>& notes,
                                heartbeat_note::what kind) {
  std::vector<held_claim> out;
  for (auto& n : notes)
    if (n.kind == kind)
      out.push_back(n.claim);
  return out;
}

} // namespace

TEST_CASE_METHOD(queue_fixture, "every claim carries a new lease token that fences its outcome",
                 "[db][store][lease]") {
  enqueue_one("A");
  auto first = q.claim("s", 1, "w", 30s).at(0);
  // The claim is lost (as in a server crash): the run is ready again at the
  // attempt it had, and the same worker claims it again.
  conn.exec("UPDATE stage_runs SET state = 'ready', attempt = attempt - 1, lease_owner = NULL, "
            "lease_token = NULL, lease_expires_at = NULL");
  conn.exec("DELETE FROM stage_attempts");
  auto second = q.claim("s", 1, "w", 30s).at(0);
  REQUIRE(second.run_id == first.run_id);
  REQUIRE(second.attempt == first.attempt);
  CHECK(second.lease_token != first.lease_token);
  // The first execution's outcome is refused; the second one's applies.
  CHECK_FALSE(q.record("w", {ok(first)}).at(0).accepted);
  CHECK(q.record("w", {ok(second)}).at(0).accepted);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE outcome = 'ok'") == 1);
}

TEST_CASE_METHOD(queue_fixture, "a heartbeat extends exactly the claims it names",
                 "[db][store][lease]") {
  enqueue_one("A");
  enqueue_one("B");
  q.register_worker({"w", "host", 1, "v1", {"s"}, 30s});
  auto got = q.claim("s", 2, "w", 1ms);
  REQUIRE(got.size() == 2);
  // Both claims are within the horizon, so the unnamed one is handed back.
  auto notes = q.heartbeat("w", 1h, {held(got[0])}, got[0].lease_token);
  CHECK(of_kind(notes, heartbeat_note::what::lost).empty());
  auto released = of_kind(notes, heartbeat_note::what::released);
  REQUIRE(released.size() == 1);
  CHECK(released[0] == held(got[1]));
  CHECK(text("SELECT state::text FROM stage_runs WHERE id = " + std::to_string(got[1].run_id))
        == "ready");
  CHECK(scalar("SELECT failed_attempts + lost_attempts FROM stage_runs WHERE id = "
               + std::to_string(got[1].run_id))
        == 0);
  // The named one got the long lease: a rescue finds nothing to take.
  std::this_thread::sleep_for(10ms);
  CHECK(q.rescue(10).empty());
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'running' AND lease_expires_at > "
               "now() + interval '30 minutes'")
        == 1);
}

TEST_CASE_METHOD(queue_fixture, "a heartbeat leaves claims past its horizon alone",
                 "[db][store][lease]") {
  enqueue_one("A");
  auto got = q.claim("s", 1, "w", 30s).at(0);
  // The claim's reply has not reached the worker yet: its token is past the
  // horizon the worker sends.
  auto notes = q.heartbeat("w", 30s, {}, got.lease_token - 1);
  CHECK(notes.empty());
  CHECK(text("SELECT state::text FROM stage_runs") == "running");
}

TEST_CASE_METHOD(queue_fixture, "a heartbeat answers with the claims the worker lost",
                 "[db][store][lease]") {
  enqueue_one("A");
  enqueue_one("B");
  auto got = q.claim("s", 2, "w", 1ms);
  REQUIRE(got.size() == 2);
  std::this_thread::sleep_for(10ms);
  REQUIRE(q.rescue(10).size() == 2);
  auto again = q.claim("s", 1, "other", 30s);
  REQUIRE(again.size() == 1);
  auto notes = q.heartbeat("w", 30s, {held(got[0]), held(got[1])}, got[1].lease_token);
  auto lost = of_kind(notes, heartbeat_note::what::lost);
  CHECK(lost.size() == 2);
  CHECK(of_kind(notes, heartbeat_note::what::released).empty());
  // The other worker's lease is not touched.
  CHECK(text("SELECT lease_owner FROM stage_runs WHERE state = 'running'") == "other");
}

TEST_CASE_METHOD(queue_fixture, "a lost lease counts apart from failures, with its own limit",
                 "[db][store][lease]") {
  std::vector<store::pipeline_stage> pipeline{{"s", {}, false, 3, 2}};
  auto task = enqueue_one("A", store::priority::normal, pipeline);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(q.claim("s", 1, "w", 1ms).size() == 1);
    std::this_thread::sleep_for(10ms);
    REQUIRE(q.rescue(10).size() == 1);
  }
  CHECK(scalar("SELECT failed_attempts FROM stage_runs") == 0);
  CHECK(scalar("SELECT lost_attempts FROM stage_runs") == 3);
  CHECK(text("SELECT state::text FROM stage_runs") == "failed");
  CHECK(text("SELECT state::text FROM tasks WHERE id = " + std::to_string(task)) == "failed");
  auto msg = text("SELECT error_message FROM stage_runs");
  CHECK_THAT(msg, Catch::Contains("lease lost 3 times") && Catch::Contains("max_lost_leases"));
  CHECK(text("SELECT error_class FROM stage_runs") == "lost");
}

TEST_CASE_METHOD(queue_fixture, "snoozes add up in snoozed_ms, each at least a second, and count no attempt",
                 "[db][store][lease]") {
  enqueue_one("A");
  for (int i = 0; i < 2; ++i) {
    auto r = q.claim("s", 1, "w", 30s).at(0);
    auto o = store::outcome_record::for_claim(r, record_kind::snooze);
    o.delay = 1ms;
    o.error_class = "rate_limited";
    o.message = "429";
    REQUIRE(q.record("w", {o}).at(0).accepted);
    std::this_thread::sleep_for(5ms);
  }
  CHECK(scalar("SELECT snoozed_ms FROM stage_runs") == 2000); // each counts at least 1 s
  CHECK(scalar("SELECT failed_attempts + lost_attempts FROM stage_runs") == 0);
  auto r = q.claim("s", 1, "w", 30s).at(0);
  CHECK(r.snoozed == 2000ms);
}

TEST_CASE_METHOD(queue_fixture, "the stuck sweep rescues a run itself and the owner learns it lost it",
                 "[db][store][lease]") {
  enqueue_one("A");
  enqueue_one("B");
  auto got = q.claim("s", 2, "w", 1h);
  REQUIRE(got.size() == 2);
  // The first has run for ten minutes; the stage's timeout is 60 s.
  conn.exec("UPDATE stage_runs SET claimed_at = now() - interval '10 minutes' WHERE id = "
            + std::to_string(got[0].run_id));
  auto rep = store::sweep_stuck(conn, {{"s", 60, "", 0, 5}}, 60, 3600);
  CHECK(rep.stuck == 1);
  auto stuck = "SELECT %s FROM stage_runs WHERE id = " + std::to_string(got[0].run_id);
  auto col = [&](const std::string& c) {
    auto sql = stuck;
    sql.replace(sql.find("%s"), 2, c);
    return text(sql);
  };
  CHECK(col("state::text") == "scheduled");
  CHECK(col("failed_attempts") == "1");
  CHECK(col("error_class") == "timeout");
  CHECK_THAT(col("error_message"), Catch::Contains("stuck"));
  // The owner's next heartbeat does not undo it: it is told it lost it.
  auto notes = q.heartbeat("w", 1h, {held(got[0]), held(got[1])}, got[1].lease_token);
  auto lost = of_kind(notes, heartbeat_note::what::lost);
  REQUIRE(lost.size() == 1);
  CHECK(lost[0] == held(got[0]));
  CHECK(col("state::text") == "scheduled");
  // The other run was not stuck.
  CHECK(text("SELECT state::text FROM stage_runs WHERE id = " + std::to_string(got[1].run_id))
        == "running");
}

TEST_CASE_METHOD(queue_fixture, "the sweep reports stale approval work", "[db][store][lease]") {
  auto task = enqueue_one("A");
  conn.exec("UPDATE tasks SET state = 'awaiting_approval', updated_at = now() - interval '2 "
            "hours' WHERE id = "
            + std::to_string(task));
  auto rep = store::sweep_stuck(conn, {{"s", 60, "", 0, 5}}, 60, 3600);
  CHECK(rep.stale_approval == 1);
  CHECK(rep.stuck == 0);
}

TEST_CASE_METHOD(queue_fixture,
                 "a record the database refuses fails its own run and the rest are recorded",
                 "[db][store][lease]") {
  for (int i = 0; i < 7; ++i)
    enqueue_one("ch" + std::to_string(i));
  auto got = q.claim("s", 7, "w", 30s);
  REQUIRE(got.size() == 7);
  std::vector<store::outcome_record> batch;
  for (auto& r : got)
    batch.push_back(ok(r, R"({"n":1})"));
  batch[4].cost = 1e9; // NUMERIC(14, 6) overflows: the whole statement fails
  CHECK_THROWS_AS(q.record("w", batch), pg::error);
  auto res = q.record_isolating("w", batch);
  REQUIRE(res.size() == 7);
  for (auto& r : res)
    CHECK(r.accepted);
  CHECK(res[4].state == "failed");
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'done'") == 6);
  auto msg = text("SELECT error_message FROM stage_runs WHERE id = "
                  + std::to_string(got[4].run_id));
  CHECK_THAT(msg, Catch::Contains("database refused") && Catch::Contains("22003"));
  // One line, without the function's source.
  CHECK(msg.find('\n') == std::string::npos);
  CHECK(msg.find("spool_record_outcomes") == std::string::npos);
}

TEST_CASE_METHOD(queue_fixture, "database errors are one line without the function's source",
                 "[db][store][lease]") {
  enqueue_one("A");
  auto r = q.claim("s", 1, "w", 30s).at(0);
  auto o = ok(r);
  o.cost = 1e9;
  try {
    q.record("w", {o});
    FAIL("the overflow was accepted");
  } catch (const pg::error& e) {
    std::string what = e.what();
    CHECK(e.sqlstate() == "22003");
    CHECK(what.find('\n') == std::string::npos);
    CHECK(what.find("WITH input") == std::string::npos);
    CHECK(what.size() < 300);
  }
}
