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
  store::outcome_record o;
  o.run_id = r.run_id;
  o.attempt = r.attempt;
  o.kind = record_kind::ok;
  o.output = std::move(output);
  return o;
}

store::outcome_record with_kind(const store::claimed_run& r, record_kind k,
                                std::chrono::milliseconds delay = 0ms) {
  store::outcome_record o;
  o.run_id = r.run_id;
  o.attempt = r.attempt;
  o.kind = k;
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
  std::this_thread::sleep_for(20ms);
  auto rescued = q.rescue(100);
  REQUIRE(rescued.size() == 1);
  CHECK(rescued[0].accepted);
  CHECK(rescued[0].state == "ready");
  CHECK(text("SELECT outcome FROM stage_attempts WHERE attempt = 1") == "lost");

  auto second = q.claim("s", 1, "w2", 30s).at(0);
  CHECK(second.run_id == first.run_id);
  CHECK(second.attempt == 2);
  CHECK(second.failed_attempts == 1); // the lost attempt counted

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
  std::this_thread::sleep_for(10ms);
  auto r3 = q.claim("s", 1, "w", 30s).at(0); // promoted once due
  CHECK(r3.failed_attempts == 0);

  CHECK(q.record("w", {with_kind(r3, record_kind::retry, 1ms)})[0].state == "scheduled");
  std::this_thread::sleep_for(10ms);
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
  q.register_worker({"w1", "host", 1, "v1"});
  q.claim("s", 1, "w1", 1ms);
  q.claim("s", 1, "w2", 1ms);
  CHECK(q.heartbeat("w1", 1h) == 1);
  std::this_thread::sleep_for(20ms);
  auto rescued = q.rescue(10);
  REQUIRE(rescued.size() == 1);
  CHECK(text("SELECT lease_owner FROM stage_runs WHERE state = 'running'") == "w1");
}
