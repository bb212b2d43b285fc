#include "runtime/store/store.hpp"
#include "tests/support/queue_fixture.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <future>
#include <map>
#include <set>
#include <thread>

using namespace spool;
using namespace std::chrono_literals;
using store::priority;
using store::record_kind;
using test::queue_fixture;

namespace {

std::vector<std::string> claim_channels(store::store& q, int n, const std::string& stage = "s") {
  std::vector<std::string> order;
  for (int i = 0; i < n; ++i) {
    auto got = q.claim(stage, 1, "w", 30s);
    if (got.empty())
      break;
    order.push_back(got[0].channel_id);
  }
  return order;
}

store::outcome_record ok(const store::claimed_run& r, std::string output = "{}") {
  auto o = store::outcome_record::for_claim(r, record_kind::ok);
  o.output = std::move(output);
  return o;
}

store::outcome_record with_kind(const store::claimed_run& r, record_kind k,
                                std::chrono::milliseconds delay = 0ms) {
  auto o = store::outcome_record::for_claim(r, k);
  o.delay = delay;
  o.error_class = k == record_kind::snooze ? "rate_limited" : "transient";
  o.message = "test";
  return o;
}

} // namespace

TEST_CASE_METHOD(queue_fixture, "8 concurrent claimers claim each of 20,000 runs exactly once",
                 "[db][store]") {
  std::vector<store::new_task> tasks(20'000);
  for (size_t i = 0; i < tasks.size(); ++i)
    tasks[i].channel_id = "ch" + std::to_string(i % 37);
  auto created = q.enqueue(tasks, single_stage());
  REQUIRE(created.size() == tasks.size());

  auto worker = [url = db.url()](int id) {
    pg::connection c{url};
    store::store s{c};
    std::vector<int64_t> mine;
    auto name = "w" + std::to_string(id);
    for (;;) {
      auto got = s.claim("s", 50, name, 60s);
      if (got.empty())
        break;
      std::vector<store::outcome_record> done;
      for (auto& r : got) {
        mine.push_back(r.run_id);
        done.push_back(ok(r));
      }
      for (auto& rec : s.record(name, done))
        if (!rec.accepted)
          mine.push_back(-rec.run_id); // marks a refused completion
    }
    return mine;
  };
  std::vector<std::future<std::vector<int64_t>>> futures;
  for (int i = 0; i < 8; ++i)
    futures.push_back(std::async(std::launch::async, worker, i));
  std::vector<int64_t> all;
  std::vector<size_t> per_worker;
  for (auto& f : futures) {
    auto got = f.get();
    per_worker.push_back(got.size());
    all.insert(all.end(), got.begin(), got.end());
  }
  CHECK(std::none_of(all.begin(), all.end(), [](int64_t x) { return x < 0; }));
  std::set<int64_t> unique(all.begin(), all.end());
  CHECK(all.size() == 20'000);
  CHECK(unique.size() == 20'000);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'done' AND attempt = 1") == 20'000);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE outcome = 'ok'") == 20'000);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 20'000);
  // Work was actually shared.
  CHECK(std::count_if(per_worker.begin(), per_worker.end(), [](size_t n) { return n > 0; }) > 1);
}

TEST_CASE_METHOD(queue_fixture, "higher priority is claimed first across channels, FIFO within",
                 "[db][store]") {
  auto low = enqueue_one("A", priority::low);
  auto n1 = enqueue_one("A", priority::normal);
  auto n2 = enqueue_one("A", priority::normal);
  auto high = enqueue_one("B", priority::high);
  auto n3 = enqueue_one("A", priority::normal);
  std::vector<int64_t> order;
  for (int i = 0; i < 5; ++i)
    order.push_back(q.claim("s", 1, "w", 30s).at(0).task_id);
  CHECK(order == std::vector<int64_t>{high, n1, n2, n3, low});
}

TEST_CASE_METHOD(queue_fixture, "a big channel cannot starve a small one: A, B, A, B, then A",
                 "[db][store]") {
  for (int i = 0; i < 10; ++i)
    enqueue_one("A");
  for (int i = 0; i < 2; ++i)
    enqueue_one("B");
  auto order = claim_channels(q, 12);
  CHECK(order == std::vector<std::string>{"A", "B", "A", "B", "A", "A", "A", "A", "A", "A",
                                          "A", "A"});
}

TEST_CASE_METHOD(queue_fixture, "a batch claim interleaves channels the same way", "[db][store]") {
  for (int i = 0; i < 6; ++i)
    enqueue_one("A");
  for (int i = 0; i < 3; ++i)
    enqueue_one("B");
  for (int i = 0; i < 3; ++i)
    enqueue_one("C");
  auto got = q.claim("s", 6, "w", 30s);
  std::vector<std::string> order;
  for (auto& r : got)
    order.push_back(r.channel_id);
  CHECK(order == std::vector<std::string>{"A", "B", "C", "A", "B", "C"});
}

TEST_CASE_METHOD(queue_fixture, "a channel that appears mid-stream is served within one rotation",
                 "[db][store]") {
  for (int i = 0; i < 20; ++i)
    enqueue_one("A");
  for (int i = 0; i < 20; ++i)
    enqueue_one("B");
  auto first = claim_channels(q, 6); // A B A B A B
  CHECK(first == std::vector<std::string>{"A", "B", "A", "B", "A", "B"});
  enqueue_one("C");
  enqueue_one("C");
  auto next = claim_channels(q, 6);
  // C is served in the current rotation, then takes its turns like the others.
  auto c_at = std::find(next.begin(), next.end(), "C") - next.begin();
  CHECK(c_at <= 2);
  CHECK(std::count(next.begin(), next.end(), "C") == 2);
  CHECK(std::count(next.begin(), next.end(), "A") == 2);
  CHECK(std::count(next.begin(), next.end(), "B") == 2);
}

TEST_CASE_METHOD(queue_fixture, "a channel returning after a burst elsewhere does not jump ahead",
                 "[db][store]") {
  enqueue_one("B");
  CHECK(claim_channels(q, 1) == std::vector<std::string>{"B"});
  for (int i = 0; i < 4; ++i)
    enqueue_one("A");
  CHECK(claim_channels(q, 2) == std::vector<std::string>{"A", "A"});
  for (int i = 0; i < 3; ++i)
    enqueue_one("B");
  // B rejoins at the current round: it alternates with A rather than first
  // draining its own three runs.
  CHECK(claim_channels(q, 5) == std::vector<std::string>{"A", "B", "A", "B", "B"});
}

TEST_CASE_METHOD(queue_fixture, "a lost lease is rescued, reclaimed, and the late result refused",
                 "[db][store]") {
  auto task = enqueue_one("A");
  auto first = q.claim("s", 1, "w1", 1ms).at(0);
  CHECK(first.attempt == 1);
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE lease_expires_at < now()", 1));
  auto rescued = q.rescue(100);
  REQUIRE(rescued.size() == 1);
  CHECK(rescued[0].accepted);
  CHECK(rescued[0].state == "ready");
  CHECK(text("SELECT outcome FROM stage_attempts WHERE attempt = 1") == "lost");

  auto second = q.claim("s", 1, "w2", 30s).at(0);
  CHECK(second.run_id == first.run_id);
  CHECK(second.attempt == 2);
  CHECK(second.lost_attempts == 1); // the lost lease counted, apart from failures
  CHECK(second.failed_attempts == 0);

  // The first worker wakes up and reports: refused, nothing changes.
  auto late = q.record("w1", {ok(first, R"({"late":true})")});
  REQUIRE(late.size() == 1);
  CHECK_FALSE(late[0].accepted);
  CHECK(late[0].state == "running");
  CHECK(text("SELECT lease_owner FROM stage_runs") == "w2");
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE output IS NOT NULL") == 0);
  // Even with the right attempt number, another worker is refused.
  auto wrong_owner = q.record("w1", {ok(second)});
  CHECK_FALSE(wrong_owner[0].accepted);

  auto good = q.record("w2", {ok(second, R"({"n":2})")});
  CHECK(good[0].accepted);
  CHECK(text("SELECT state::text FROM tasks WHERE id = " + std::to_string(task)) == "completed");
  CHECK(text("SELECT output->>'n' FROM stage_runs") == "2");
}

TEST_CASE_METHOD(queue_fixture, "release and snooze count no attempt; retry does", "[db][store]") {
  enqueue_one("A");
  auto r1 = q.claim("s", 1, "w", 30s).at(0);
  CHECK(q.record("w", {with_kind(r1, record_kind::release)})[0].state == "ready");
  auto r2 = q.claim("s", 1, "w", 30s).at(0);
  CHECK(r2.failed_attempts == 0);
  CHECK(r2.attempt == 2);

  CHECK(q.record("w", {with_kind(r2, record_kind::snooze, 1ms)})[0].state == "scheduled");
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE ready_at <= now()", 1));
  auto r3 = q.claim("s", 1, "w", 30s).at(0); // promoted once due
  CHECK(r3.failed_attempts == 0);

  CHECK(q.record("w", {with_kind(r3, record_kind::retry, 1ms)})[0].state == "scheduled");
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE ready_at <= now()", 1));
  auto r4 = q.claim("s", 1, "w", 30s).at(0);
  CHECK(r4.failed_attempts == 1);
  CHECK(r4.attempt == 4);
  CHECK(scalar("SELECT retry_count FROM tasks") == 1);
  auto outcomes = conn.exec("SELECT outcome FROM stage_attempts ORDER BY attempt");
  REQUIRE(outcomes.rows() == 4);
  CHECK(outcomes.str(0, 0) == "released");
  CHECK(outcomes.str(1, 0) == "snoozed");
  CHECK(outcomes.str(2, 0) == "retry");
  CHECK(outcomes.is_null(3, 0)); // still running
}

TEST_CASE_METHOD(queue_fixture, "a retry scheduled in the future is not claimable before its time",
                 "[db][store]") {
  enqueue_one("A");
  auto r = q.claim("s", 1, "w", 30s).at(0);
  q.record("w", {with_kind(r, record_kind::retry, 1h)});
  CHECK(q.claim("s", 1, "w", 30s).empty());
  CHECK(text("SELECT state::text FROM stage_runs") == "scheduled");
}

TEST_CASE_METHOD(queue_fixture, "past the retry limit the run and its task fail", "[db][store]") {
  auto task = enqueue_one("A", priority::normal, {{"s", {}, false, 1}});
  auto r1 = q.claim("s", 1, "w", 30s).at(0);
  CHECK(q.record("w", {with_kind(r1, record_kind::retry)})[0].state == "ready");
  auto r2 = q.claim("s", 1, "w", 30s).at(0);
  CHECK(q.record("w", {with_kind(r2, record_kind::retry)})[0].state == "failed");
  CHECK(text("SELECT state::text FROM tasks WHERE id = " + std::to_string(task)) == "failed");
  CHECK(text("SELECT error_message FROM tasks") == "s: test");
}

TEST_CASE_METHOD(queue_fixture, "enqueueing the same idempotency key twice creates one task",
                 "[db][store]") {
  store::new_task t;
  t.channel_id = "A";
  t.idempotency_key = "video-42";
  auto a = q.enqueue({t}, single_stage());
  auto b = q.enqueue({t, t}, single_stage());
  CHECK(a[0].created);
  REQUIRE(b.size() == 2);
  CHECK_FALSE(b[0].created);
  CHECK_FALSE(b[1].created);
  CHECK(b[0].task_id == a[0].task_id);
  CHECK(b[1].task_id == a[0].task_id);
  CHECK(scalar("SELECT count(*) FROM tasks") == 1);
  CHECK(scalar("SELECT count(*) FROM stage_runs") == 1);
}

TEST_CASE_METHOD(queue_fixture, "a priority change reorders queued work", "[db][store]") {
  auto first = enqueue_one("A");
  auto second = enqueue_one("A");
  auto third = enqueue_one("B");
  CHECK(q.set_priority(third, priority::low));
  CHECK(q.set_priority(second, priority::high));
  CHECK_FALSE(q.set_priority(999'999, priority::high));
  std::vector<int64_t> order;
  for (int i = 0; i < 3; ++i)
    order.push_back(q.claim("s", 1, "w", 30s).at(0).task_id);
  CHECK(order == std::vector<int64_t>{second, first, third});
}

TEST_CASE_METHOD(queue_fixture, "a priority change also applies to stages not yet ready",
                 "[db][store]") {
  std::vector<store::pipeline_stage> dag{{"a", {}, false, 3}, {"b", {"a"}, false, 3}};
  auto t1 = enqueue_one("A", priority::normal, dag);
  auto t2 = enqueue_one("B", priority::normal, dag);
  auto a1 = q.claim("a", 2, "w", 30s);
  REQUIRE(a1.size() == 2);
  q.set_priority(t2, priority::high);
  q.record("w", {ok(a1[0]), ok(a1[1])});
  auto b = q.claim("b", 2, "w", 30s);
  REQUIRE(b.size() == 2);
  CHECK(b[0].task_id == t2);
  CHECK(b[1].task_id == t1);
}

TEST_CASE_METHOD(queue_fixture, "cancel stops queued runs and refuses the running one's result",
                 "[db][store]") {
  std::vector<store::pipeline_stage> dag{{"a", {}, false, 3}, {"b", {"a"}, false, 3}};
  auto task = enqueue_one("A", priority::normal, dag);
  auto running = q.claim("a", 1, "w", 30s).at(0);
  pg::connection listener{db.url()};
  listener.listen("spool_cancel");
  auto cancelled = q.cancel(task);
  REQUIRE(cancelled.size() == 2);
  CHECK(std::count_if(cancelled.begin(), cancelled.end(),
                      [](auto& c) { return c.was_running; }) == 1);
  CHECK(text("SELECT state::text FROM tasks") == "cancelled");
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'cancelled'") == 2);
  listener.wait_readable(2s);
  auto notes = listener.drain_notifications();
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].payload == std::to_string(running.run_id));
  CHECK_FALSE(q.record("w", {ok(running)})[0].accepted);
  CHECK(q.claim("b", 1, "w", 30s).empty());
}

TEST_CASE_METHOD(queue_fixture, "a stage with two inputs becomes ready only after both",
                 "[db][store]") {
  std::vector<store::pipeline_stage> dag{{"root", {}, false, 3},
                                         {"left", {"root"}, false, 3},
                                         {"right", {"root"}, false, 3},
                                         {"join", {"left", "right"}, false, 3}};
  auto task = enqueue_one("A", priority::normal, dag);
  CHECK(q.claim("left", 1, "w", 30s).empty());
  q.record("w", {ok(q.claim("root", 1, "w", 30s).at(0), R"({"frames":3})")});
  auto left = q.claim("left", 1, "w", 30s);
  auto right = q.claim("right", 1, "w", 30s);
  REQUIRE(left.size() == 1);
  REQUIRE(right.size() == 1);
  CHECK(left[0].inputs == R"({"root": {"frames": 3}})");
  q.record("w", {ok(left[0], R"({"l":1})")});
  CHECK(q.claim("join", 1, "w", 30s).empty());
  q.record("w", {ok(right[0], R"({"video_url":"/x.mp4"})")});
  auto join = q.claim("join", 1, "w", 30s);
  REQUIRE(join.size() == 1);
  CHECK(join[0].inputs == R"({"left": {"l": 1}, "right": {"video_url": "/x.mp4"}})");
  CHECK(text("SELECT state::text FROM tasks") == "running");
  q.record("w", {ok(join[0])});
  CHECK(text("SELECT state::text FROM tasks WHERE id = " + std::to_string(task)) == "completed");
  CHECK(text("SELECT video_url FROM tasks") == "/x.mp4");
}

TEST_CASE_METHOD(queue_fixture, "a failed optional stage leaves the task partially completed",
                 "[db][store]") {
  std::vector<store::pipeline_stage> dag{{"a", {}, false, 3}, {"upload", {"a"}, true, 0}};
  enqueue_one("A", priority::normal, dag);
  q.record("w", {ok(q.claim("a", 1, "w", 30s).at(0), R"({"storyboard":{"t":1}})")});
  auto up = q.claim("upload", 1, "w", 30s).at(0);
  auto res = q.record("w", {with_kind(up, record_kind::fail)});
  CHECK(res[0].state == "failed");
  CHECK(text("SELECT state::text FROM tasks") == "partially_completed");
  CHECK(text("SELECT storyboard_data::text FROM tasks") == R"({"t": 1})");
}

TEST_CASE_METHOD(queue_fixture, "heartbeats extend only the worker's own leases", "[db][store]") {
  enqueue_one("A");
  enqueue_one("B");
  q.register_worker({"w1", "host", 1, "v1", {"s"}, 30s});
  auto mine = q.claim("s", 1, "w1", 1ms).at(0);
  auto theirs = q.claim("s", 1, "w2", 1ms).at(0);
  // w1 names w2's claim too: that is not w1's to extend.
  auto notes = q.heartbeat("w1", 1h,
                           {{mine.run_id, mine.attempt, mine.lease_token},
                            {theirs.run_id, theirs.attempt, theirs.lease_token}},
                           theirs.lease_token);
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].claim.run_id == theirs.run_id);
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE lease_owner = 'w2' "
                   "AND lease_expires_at < now()",
                   1));
  auto rescued = q.rescue(10);
  REQUIRE(rescued.size() == 1);
  CHECK(text("SELECT lease_owner FROM stage_runs WHERE state = 'running'") == "w1");
}

TEST_CASE_METHOD(queue_fixture,
                 "one batch of mixed outcomes applies each, and refuses only the stale one",
                 "[db][store]") {
  std::vector<store::pipeline_stage> dag{{"a", {}, false, 3}, {"b", {"a"}, false, 3}};
  auto done_task = enqueue_one("A", priority::normal, dag);
  auto retry_task = enqueue_one("B", priority::normal, dag);
  auto snooze_task = enqueue_one("C", priority::normal, dag);
  auto fail_task = enqueue_one("D", priority::normal, dag);
  auto stale_task = enqueue_one("E", priority::normal, dag);
  auto got = q.claim("a", 5, "w1", 30s);
  REQUIRE(got.size() == 5);
  std::map<int64_t, store::claimed_run> by_task;
  for (auto& r : got)
    by_task[r.task_id] = r;
  // The stale run was cancelled meanwhile: its outcome must change nothing.
  q.cancel(stale_task);

  auto fail = with_kind(by_task[fail_task], record_kind::fail);
  fail.message = "bad input";
  auto res = q.record("w1", {with_kind(by_task[snooze_task], record_kind::snooze, 1h),
                             ok(by_task[stale_task], R"({"video_url":"/stale.mp4"})"),
                             ok(by_task[done_task], R"({"video_url":"/a.mp4"})"),
                             fail, with_kind(by_task[retry_task], record_kind::retry)});
  REQUIRE(res.size() == 5);
  // Input order, with the state each run is in now.
  CHECK(res[0].run_id == by_task[snooze_task].run_id);
  CHECK(res[0].accepted);
  CHECK(res[0].state == "scheduled");
  CHECK(res[1].run_id == by_task[stale_task].run_id);
  CHECK_FALSE(res[1].accepted);
  CHECK(res[1].state == "cancelled");
  CHECK(res[2].accepted);
  CHECK(res[2].state == "done");
  CHECK(res[3].accepted);
  CHECK(res[3].state == "failed");
  CHECK(res[4].accepted);
  CHECK(res[4].state == "ready");

  auto task_state = [&](int64_t id) {
    return text("SELECT state::text FROM tasks WHERE id = " + std::to_string(id));
  };
  CHECK(task_state(done_task) == "running"); // b is ready now
  CHECK(task_state(fail_task) == "failed");
  CHECK(task_state(stale_task) == "cancelled");
  CHECK(text("SELECT coalesce(video_url, '-') FROM tasks WHERE id = "
             + std::to_string(stale_task)) == "-");
  CHECK(text("SELECT video_url FROM tasks WHERE id = " + std::to_string(done_task)) == "/a.mp4");
  CHECK(text("SELECT error_message FROM tasks WHERE id = " + std::to_string(fail_task))
        == "a: bad input");
  CHECK(scalar("SELECT retry_count FROM tasks WHERE id = " + std::to_string(retry_task)) == 1);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE stage = 'b' AND state = 'skipped'") == 1);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE outcome IS NULL") == 0);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE outcome = 'cancelled'") == 1);

  // Only the done task's downstream stage is claimable; the retried run is
  // back in the queue at once.
  auto b = q.claim("b", 5, "w1", 30s);
  REQUIRE(b.size() == 1);
  CHECK(b[0].task_id == done_task);
  CHECK(b[0].inputs == R"({"a": {"video_url": "/a.mp4"}})");
  auto again = q.claim("a", 5, "w1", 30s);
  REQUIRE(again.size() == 1);
  CHECK(again[0].task_id == retry_task);
  CHECK(again[0].failed_attempts == 1);
}

TEST_CASE_METHOD(queue_fixture,
                 "parallel stages of the same tasks recorded by concurrent workers finish "
                 "every task exactly once",
                 "[db][store]") {
  // root -> {left, right} -> join: the two middle stages of one task finish
  // on different workers at the same moment, in batches that overlap tasks
  // in different orders.
  std::vector<store::pipeline_stage> dag{{"root", {}, false, 3},
                                         {"left", {"root"}, false, 3},
                                         {"right", {"root"}, false, 3},
                                         {"join", {"left", "right"}, false, 3}};
  constexpr int n = 400;
  std::vector<store::new_task> tasks(n);
  for (int i = 0; i < n; ++i)
    tasks[static_cast<size_t>(i)].channel_id = "ch" + std::to_string(i % 7);
  q.enqueue(tasks, dag);

  auto drain = [url = db.url()](std::string stage, std::string worker, bool reverse) {
    pg::connection c{url};
    store::store s{c};
    int refused = 0;
    for (;;) {
      auto got = s.claim(stage, 25, worker, 60s);
      if (got.empty())
        break;
      std::vector<store::outcome_record> done;
      for (auto& r : got)
        done.push_back(ok(r, R"({"n":1})"));
      if (reverse)
        std::reverse(done.begin(), done.end());
      for (auto& rec : s.record(worker, done))
        refused += rec.accepted ? 0 : 1;
    }
    return refused;
  };
  CHECK(drain("root", "w0", false) == 0);
  std::vector<std::future<int>> workers;
  workers.push_back(std::async(std::launch::async, drain, "left", "w1", false));
  workers.push_back(std::async(std::launch::async, drain, "right", "w2", true));
  workers.push_back(std::async(std::launch::async, drain, "left", "w3", true));
  workers.push_back(std::async(std::launch::async, drain, "right", "w4", false));
  for (auto& w : workers)
    CHECK(w.get() == 0);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE stage = 'join' AND state = 'ready'") == n);
  CHECK(drain("join", "w5", false) == 0);

  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed' AND runs_pending = 0 "
               "AND finished_at IS NOT NULL") == n);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'done' AND attempt = 1") == 4 * n);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE outcome = 'ok'") == 4 * n);
}

TEST_CASE_METHOD(queue_fixture, "pending work means ready, running or scheduled runs",
                 "[db][store]") {
  CHECK_FALSE(q.has_pending_work());
  enqueue_one("A", priority::normal, {{"a", {}, false, 3}, {"b", {"a"}, false, 3}});
  CHECK(q.has_pending_work()); // a is ready
  CHECK(q.has_pending_work({"a"}));
  CHECK_FALSE(q.has_pending_work({"b"})); // another worker's stages see nothing
  auto a = q.claim("a", 1, "w", 30s).at(0);
  CHECK(q.has_pending_work()); // a is running (b is blocked)
  CHECK_FALSE(q.has_pending_work({"b", "c"}));
  q.record("w", {with_kind(a, record_kind::retry, 1h)});
  CHECK(q.has_pending_work()); // a waits for its retry
  CHECK(q.has_pending_work({"b", "a"}));
  conn.exec("UPDATE stage_runs SET ready_at = now() - interval '1 second' "
            "WHERE state = 'scheduled'");
  a = q.claim("a", 1, "w", 30s).at(0);
  q.record("w", {ok(a)});
  auto b = q.claim("b", 1, "w", 30s).at(0);
  q.record("w", {ok(b)});
  CHECK_FALSE(q.has_pending_work());
}

TEST_CASE_METHOD(queue_fixture, "a run has a lease owner exactly while it runs", "[db][store]") {
  std::vector<store::pipeline_stage> dag{{"a", {}, false, 3}, {"b", {"a"}, false, 3}};
  for (int i = 0; i < 6; ++i)
    enqueue_one("ch" + std::to_string(i % 2), priority::normal, dag);
  auto broken = [&] {
    return scalar("SELECT count(*) FROM stage_runs "
                  "WHERE (state = 'running') <> (lease_owner IS NOT NULL)");
  };
  auto got = q.claim("a", 6, "w", 30s);
  REQUIRE(got.size() == 6);
  CHECK(broken() == 0);
  q.cancel(got[5].task_id);
  q.record("w", {ok(got[0]), with_kind(got[1], record_kind::retry),
                 with_kind(got[2], record_kind::snooze, 1h),
                 with_kind(got[3], record_kind::release), with_kind(got[4], record_kind::fail),
                 ok(got[5])});
  CHECK(broken() == 0);
  CHECK(q.claim("b", 6, "w", 30s).size() == 1);
  CHECK(broken() == 0);
}

TEST_CASE_METHOD(queue_fixture,
                 "a run that lands behind the head a claimer remembers is claimed within a "
                 "second",
                 "[db][store]") {
  // Each session scans from the last head it saw (claimed runs leave dead
  // index entries at the front). A writer that read the head just before a
  // claim moved it can still place a run behind it; forge one.
  for (int i = 0; i < 6; ++i)
    enqueue_one("ch" + std::to_string(i % 3));
  CHECK(q.claim("s", 3, "w", 30s).size() == 3); // rounds 1: the head moves to 2
  auto behind = enqueue_one("late");
  conn.exec("UPDATE stage_runs SET fair_round = 0 WHERE task_id = " + std::to_string(behind));
  std::set<int64_t> seen;
  for (auto& r : q.claim("s", 1, "w", 30s))
    seen.insert(r.task_id);
  std::this_thread::sleep_for(1100ms);
  auto next = q.claim("s", 1, "w", 30s);
  REQUIRE(next.size() == 1);
  seen.insert(next[0].task_id);
  CHECK(seen.count(behind) == 1);
}

TEST_CASE_METHOD(queue_fixture, "an attempt keeps the times its execution really ran",
                 "[db][store]") {
  enqueue_one("A");
  enqueue_one("B");
  auto got = q.claim("s", 2, "w", 30s);
  REQUIRE(got.size() == 2);
  auto timed = ok(got[0]);
  timed.started_us = 1'700'000'000'000'000;  // 2023-11-14 22:13:20 UTC
  timed.finished_us = 1'700'000'002'500'000; // 2.5 s later
  q.record("w", {timed, ok(got[1])});
  CHECK(text("SELECT extract(epoch FROM finished_at - started_at)::text FROM stage_attempts "
             "WHERE stage_run_id = " + std::to_string(got[0].run_id)) == "2.500000");
  CHECK(text("SELECT extract(epoch FROM started_at)::bigint::text FROM stage_attempts "
             "WHERE stage_run_id = " + std::to_string(got[0].run_id)) == "1700000000");
  // Unknown times: the claim's and the record's.
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE stage_run_id = "
               + std::to_string(got[1].run_id)
               + " AND started_at > now() - interval '1 minute' AND finished_at >= started_at")
        == 1);
}

TEST_CASE_METHOD(queue_fixture,
                 "a heartbeat skips runs whose outcome is being written instead of waiting",
                 "[db][store]") {
  // A worker's record connection holds its runs in the order of its batch;
  // a heartbeat that waited for them in another order could deadlock.
  enqueue_one("A");
  enqueue_one("B");
  auto got = q.claim("s", 2, "w", 30s);
  REQUIRE(got.size() == 2);
  pg::connection recorder{db.url()};
  recorder.exec("BEGIN");
  recorder.exec("SELECT 1 FROM stage_runs WHERE id = $1 FOR UPDATE",
                {pg::to_param(got[0].run_id)});
  conn.exec("SET statement_timeout = '5s'"); // a wait fails the test, not hangs it
  std::vector<store::held_claim> held;
  for (auto& r : got)
    held.push_back({r.run_id, r.attempt, r.lease_token});
  auto extended = [&] {
    return scalar("SELECT count(*) FROM stage_runs WHERE lease_expires_at > now() + "
                  "interval '30 minutes'");
  };
  // Neither lost (the lock hides nothing from the check) nor waited for.
  CHECK(q.heartbeat("w", 1h, held, got[1].lease_token).empty());
  CHECK(extended() == 1);
  recorder.exec("ROLLBACK");
  CHECK(q.heartbeat("w", 1h, held, got[1].lease_token).empty());
  CHECK(extended() == 2);
}

TEST_CASE_METHOD(queue_fixture,
                 "warming a session up leaves no task, run, attempt or notification behind",
                 "[db][store]") {
  pg::connection listener{db.url()};
  listener.listen("spool_wakeup");
  listener.drain_notifications();
  q.warm_up();
  q.warm_up(); // as often as the session reconnects
  for (const char* table : {"tasks", "stage_runs", "stage_attempts", "stage_fair_channels"})
    CHECK(conn.exec(std::string{"SELECT count(*) FROM "} + table).i64(0, 0) == 0);
  listener.wait_readable(200ms);
  CHECK(listener.drain_notifications().empty());
  // The session works as before: a real task goes through.
  store::new_task real;
  real.channel_id = "ch";
  q.enqueue({real}, single_stage("s"));
  auto got = q.claim("s", 5, "w", 30s);
  REQUIRE(got.size() == 1);
  CHECK(q.record("w", {ok(got[0])}).at(0).accepted);
  CHECK(conn.exec("SELECT state::text FROM tasks").str(0, 0) == "completed");
}
