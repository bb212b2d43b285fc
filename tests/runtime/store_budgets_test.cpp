// Cost and budgets in the database: estimates stored at enqueue, actual cost
// across retries, the overrun event, soft budget warnings, hard budgets that
// concurrent claims cannot overshoot, reservations given back by outcomes,
// rescues and cancels, client budgets, and the daily report.

#include "runtime/pg/connection.hpp"
#include "runtime/store/providers.hpp"
#include "runtime/store/store.hpp"
#include "tests/support/queue_fixture.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <mutex>
#include <thread>

using namespace spool;
using namespace std::chrono_literals;
using store::record_kind;

namespace {

struct budget_fixture : test::queue_fixture {
  /// Enqueues `n` single-stage tasks on `stage`, each run estimated at
  /// `usd`, for `client`.
  std::vector<int64_t> enqueue_paid(int n, double usd, const std::string& stage = "s",
                                    const std::string& client = "") {
    std::vector<store::new_task> tasks;
    for (int i = 0; i < n; ++i) {
      store::new_task t;
      t.channel_id = "ch" + std::to_string(i % 3);
      t.client_id = client;
      t.run_estimates = {usd};
      tasks.push_back(t);
    }
    std::vector<int64_t> ids;
    for (auto& e : q.enqueue(tasks, single_stage(stage)))
      ids.push_back(e.task_id);
    return ids;
  }

  void budgets(const std::string& json) { q.sync_budgets(json); }

  store::recorded finish(store::store& s, const store::claimed_run& r, record_kind kind,
                         double cost, const std::string& worker = "w") {
    auto o = store::outcome_record::for_claim(r, kind);
    o.cost = cost;
    if (kind == record_kind::retry)
      o.error_class = "transient";
    return s.record(worker, {o}).at(0);
  }
  store::recorded finish(const store::claimed_run& r, record_kind kind, double cost) {
    return finish(q, r, kind, cost);
  }

  double money(const std::string& sql) { return conn.exec(sql).f64(0, 0); }
  double reserved() {
    return money("SELECT coalesce(sum(reserved), 0)::float8 FROM spool_money "
                 "WHERE scope = 'total'");
  }
  double spent(const std::string& scope = "total") {
    return conn
      .query("SELECT coalesce(sum(spent), 0)::float8 FROM spool_money WHERE scope = $1", scope)
      .f64(0, 0);
  }
  int64_t events(const std::string& kind) {
    return conn.query("SELECT count(*) FROM spool_provider_events WHERE kind = $1", kind)
      .i64(0, 0);
  }
};

} // namespace

TEST_CASE_METHOD(budget_fixture, "a task is estimated at the sum of its runs unless it gives one",
                 "[db][store][cost]") {
  std::vector<store::pipeline_stage> dag{{"a", {}, false, 3}, {"b", {"a"}, false, 3}};
  store::new_task t;
  t.channel_id = "c";
  t.run_estimates = {0.25, 1.5};
  store::new_task given = t;
  given.estimated_cost = 9;
  auto ids = q.enqueue({t, given}, dag);
  CHECK(money("SELECT estimated_cost::float8 FROM tasks WHERE id = " + std::to_string(ids[0].task_id))
        == Approx(1.75));
  CHECK(money("SELECT estimated_cost::float8 FROM tasks WHERE id = " + std::to_string(ids[1].task_id))
        == Approx(9));
  CHECK(money("SELECT est_cost::float8 FROM stage_runs WHERE stage = 'b' AND task_id = "
              + std::to_string(ids[1].task_id))
        == Approx(1.5));
  // Without run estimates, every run is free.
  enqueue_one("plain");
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE est_cost = 0") == 1);
}

TEST_CASE_METHOD(budget_fixture,
                 "actual cost adds up across retries and a task past 1.2 x its estimate "
                 "fires one overrun event",
                 "[db][store][cost]") {
  budgets(R"({"soft_usd": 0, "hard_usd": 0})");
  auto id = enqueue_paid(1, 1.0).at(0);
  auto first = q.claim("s", 1, "w", 60s);
  REQUIRE(finish(first.at(0), record_kind::retry, 0.7).accepted);
  CHECK(events("cost_overrun") == 0);
  auto second = q.claim("s", 1, "w", 60s);
  REQUIRE(second.size() == 1);
  REQUIRE(finish(second.at(0), record_kind::ok, 0.6).accepted);
  auto task = "SELECT actual_cost::float8 FROM tasks WHERE id = " + std::to_string(id);
  CHECK(money(task) == Approx(1.3));
  CHECK(events("cost_overrun") == 1);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE overrun_at IS NOT NULL") == 1);
  CHECK(text("SELECT message FROM spool_provider_events WHERE kind = 'cost_overrun'")
          .find("actual cost 1.3 USD is past 1.2 x its estimate of 1 USD")
        != std::string::npos);
  CHECK(spent() == Approx(1.3));
  CHECK(spent("stage:s") == Approx(1.3));
}

TEST_CASE_METHOD(budget_fixture, "the soft budget warns once a day", "[db][store][cost]") {
  budgets(R"({"soft_usd": 1, "hard_usd": 0})");
  enqueue_paid(4, 0.5);
  auto runs = q.claim("s", 4, "w", 60s);
  REQUIRE(runs.size() == 4);
  REQUIRE(finish(runs[0], record_kind::ok, 0.6).accepted);
  CHECK(events("budget_warning") == 0);
  REQUIRE(finish(runs[1], record_kind::ok, 0.6).accepted);
  CHECK(events("budget_warning") == 1);
  REQUIRE(finish(runs[2], record_kind::ok, 0.6).accepted);
  REQUIRE(finish(runs[3], record_kind::ok, 0.6).accepted);
  CHECK(events("budget_warning") == 1);
  CHECK(spent() == Approx(2.4));
}

TEST_CASE_METHOD(budget_fixture,
                 "a hard budget of 10 USD holds with three workers claiming 50 tasks of 0.50 "
                 "USD, and work resumes when it is raised",
                 "[db][store][cost]") {
  budgets(R"({"soft_usd": 0, "hard_usd": 10})");
  enqueue_paid(50, 0.5);
  std::atomic<bool> stop{false};
  std::atomic<double> worst{0};
  std::atomic<int> held{0};
  // A watcher samples what is reserved or spent: it must never pass 10.
  std::thread watcher([&] {
    pg::connection c{db.url()};
    while (!stop) {
      double now = c.exec("SELECT coalesce(sum(spent + reserved), 0)::float8 FROM spool_money "
                          "WHERE scope = 'total'")
                     .f64(0, 0);
      double w = worst;
      while (now > w && !worst.compare_exchange_weak(w, now)) {
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  auto work = [&](int n) {
    pg::connection c{db.url()};
    store::store s{c};
    std::string me = "w" + std::to_string(n);
    for (int round = 0; round < 40; ++round) {
      auto got = s.claim_limited("s", 3, me, 60s, "");
      if (!got.held_back.empty())
        ++held;
      for (auto& r : got.runs)
        REQUIRE(finish(s, r, record_kind::ok, 0.5, me).accepted);
    }
  };
  std::vector<std::thread> workers;
  for (int i = 0; i < 3; ++i)
    workers.emplace_back(work, i);
  for (auto& t : workers)
    t.join();
  stop = true;
  watcher.join();
  CHECK(worst.load() <= 10.0 + 1e-9);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'done'") == 20);
  CHECK(spent() == Approx(10));
  CHECK(reserved() == Approx(0));
  CHECK(held.load() > 0);
  CHECK(events("budget_exhausted") == 1);
  auto got = q.claim_limited("s", 5, "w", 60s, "");
  CHECK(got.runs.empty());
  CHECK(got.held_back.find("hard budget 10 USD a day reached (10 spent, 0 reserved)")
        != std::string::npos);
  REQUIRE(got.wait);
  CHECK(got.wait->count() > 0);

  // Raised live: the rest goes through (30 x 0.50 more, 25 in all).
  budgets(R"({"soft_usd": 0, "hard_usd": 30})");
  int done = 0;
  for (int i = 0; i < 20 && done < 30; ++i) {
    auto more = q.claim_limited("s", 10, "w", 60s, "");
    for (auto& r : more.runs) {
      REQUIRE(finish(r, record_kind::ok, 0.5).accepted);
      ++done;
    }
  }
  CHECK(done == 30);
  CHECK(spent() == Approx(25));
}

TEST_CASE_METHOD(budget_fixture, "a new budget day admits paid work again",
                 "[db][store][cost]") {
  // A budget day of 2 s stands in for a day (budgets.day_s, for tests).
  budgets(R"({"soft_usd": 0, "hard_usd": 1, "day_s": 2})");
  enqueue_paid(4, 0.5);
  auto first = q.claim_limited("s", 4, "w", 60s, "");
  REQUIRE(first.runs.size() == 2);
  REQUIRE(first.wait);
  CHECK(first.wait->count() <= 2000);
  for (auto& r : first.runs)
    REQUIRE(finish(r, record_kind::ok, 0.5).accepted);
  CHECK(q.claim_limited("s", 4, "w", 60s, "").runs.empty());
  std::this_thread::sleep_for(*first.wait + 50ms);
  auto next = q.claim_limited("s", 4, "w", 60s, "");
  CHECK(next.runs.size() == 2);
  CHECK(scalar("SELECT count(DISTINCT day) FROM spool_money WHERE scope = 'total'") == 2);
}

TEST_CASE_METHOD(budget_fixture,
                 "free runs go on while the hard budget holds paid ones back",
                 "[db][store][cost]") {
  budgets(R"({"soft_usd": 0, "hard_usd": 1})");
  enqueue_paid(3, 0.6, "paid");
  enqueue_paid(3, 0, "free");
  CHECK(q.claim("paid", 3, "w", 60s).size() == 1);
  CHECK(q.claim("free", 3, "w", 60s).size() == 3);
  // A stage mixing both: the paid run that does not fit is skipped, the free
  // ones behind it are claimed.
  std::vector<store::new_task> mixed;
  for (double usd : {0.6, 0.0, 0.0}) {
    store::new_task t;
    t.channel_id = "m";
    t.run_estimates = {usd};
    mixed.push_back(t);
  }
  q.enqueue(mixed, single_stage("mixed"));
  auto got = q.claim_limited("mixed", 3, "w", 60s, "");
  CHECK(got.runs.size() == 2);
  CHECK_FALSE(got.held_back.empty());
}

TEST_CASE_METHOD(budget_fixture,
                 "a reservation comes back with a failure without cost, a rescue and a cancel",
                 "[db][store][cost]") {
  budgets(R"({"soft_usd": 0, "hard_usd": 100})");
  auto ids = enqueue_paid(3, 2);
  auto runs = q.claim("s", 3, "w", 60s);
  REQUIRE(runs.size() == 3);
  CHECK(reserved() == Approx(6));
  // A failed attempt that reports no cost spends nothing.
  REQUIRE(finish(runs[0], record_kind::retry, 0).accepted);
  CHECK(reserved() == Approx(4));
  CHECK(spent() == Approx(0));
  // A crashed worker: its lease expires, the rescue gives the money back.
  conn.exec("UPDATE stage_runs SET lease_expires_at = now() - interval '1 second' "
            "WHERE id = " + std::to_string(runs[1].run_id));
  REQUIRE(q.rescue(10).size() == 1);
  CHECK(reserved() == Approx(2));
  // A cancel of a running run.
  q.cancel(runs[2].task_id);
  CHECK(reserved() == Approx(0));
  CHECK(spent() == Approx(0));
  (void)ids;
}

TEST_CASE_METHOD(budget_fixture, "a client's hard budget holds its runs, not the others'",
                 "[db][store][cost]") {
  budgets(R"({"soft_usd": 0, "hard_usd": 100, "client_hard_usd": {"acme": 1}})");
  enqueue_paid(3, 0.5, "s", "acme");
  enqueue_paid(3, 0.5, "s", "globex");
  auto got = q.claim_limited("s", 6, "w", 60s, "");
  CHECK(got.runs.size() == 5);
  CHECK(got.held_back.find("hard budget of client:acme reached") != std::string::npos);
  CHECK(money("SELECT reserved::float8 FROM spool_money WHERE scope = 'client:acme'")
        == Approx(1));
  for (auto& r : got.runs)
    REQUIRE(finish(r, record_kind::ok, 0.5).accepted);
  CHECK(spent("client:acme") == Approx(1));
  CHECK(spent("client:globex") == Approx(1.5));
  CHECK(money("SELECT reserved::float8 FROM spool_money WHERE scope = 'client:acme'") == 0);
}

TEST_CASE_METHOD(budget_fixture, "the report shows spend, estimates and actuals by key",
                 "[db][store][cost]") {
  budgets(R"({"soft_usd": 0, "hard_usd": 0})");
  enqueue_paid(2, 1.0, "s", "acme");
  enqueue_paid(1, 1.0, "s", "globex");
  for (auto& r : q.claim("s", 3, "w", 60s))
    REQUIRE(finish(r, record_kind::ok, 1.25).accepted);
  auto rows = conn.exec("SELECT key, spent::float8, tasks, estimated::float8, actual::float8 "
                        "FROM spool_cost_report(NULL, 'client')");
  REQUIRE(rows.rows() == 2);
  CHECK(rows.str(0, 0) == "acme");
  CHECK(rows.f64(0, 1) == Approx(2.5));
  CHECK(rows.i64(0, 2) == 2);
  CHECK(rows.f64(0, 3) == Approx(2));
  CHECK(rows.f64(0, 4) == Approx(2.5));
  auto total = conn.exec("SELECT spent::float8 FROM spool_cost_report(NULL, '')");
  CHECK(total.f64(0, 0) == Approx(3.75));
  CHECK_THROWS_WITH(conn.exec("SELECT * FROM spool_cost_report(NULL, 'channel')"),
                    Catch::Contains("by: must be client, campaign, provider or stage"));
}
