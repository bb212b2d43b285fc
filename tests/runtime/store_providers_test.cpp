// Provider limits enforced by the database at claim time: concurrency across
// connections, token bucket, quota windows and their events, the circuit
// breaker, pauses after "rate limited", fallback providers, the event log
// and the status view.

#include "runtime/pg/connection.hpp"
#include "runtime/store/providers.hpp"
#include "runtime/store/store.hpp"
#include "tests/support/queue_fixture.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>

using namespace spool;
using namespace std::chrono_literals;
using store::claim_result;
using store::record_kind;

namespace {

struct providers_fixture : test::queue_fixture {
  /// Enqueues `n` tasks on stage `stage` (channels alternate a/b), each with
  /// the payload `payloads[i]` when given.
  std::vector<int64_t> enqueue_n(int n, const std::vector<std::string>& payloads = {},
                                 const std::string& stage = "s") {
    std::vector<store::new_task> tasks;
    for (int i = 0; i < n; ++i) {
      store::new_task t;
      t.channel_id = i % 2 == 0 ? "a" : "b";
      if (static_cast<size_t>(i) < payloads.size())
        t.payload = payloads[static_cast<size_t>(i)];
      tasks.push_back(t);
    }
    std::vector<int64_t> ids;
    for (auto& e : q.enqueue(tasks, single_stage(stage)))
      ids.push_back(e.task_id);
    return ids;
  }

  claim_result claim(const std::string& provider, int limit, const std::string& fallback = {},
                     const std::string& stage = "s") {
    return q.claim_limited(stage, limit, "w", 60s, provider, fallback);
  }

  store::recorded finish(const store::claimed_run& r, record_kind kind,
                         const std::string& error_class = {},
                         std::chrono::milliseconds delay = 0ms) {
    auto o = store::outcome_record::for_claim(r, kind);
    o.error_class = error_class;
    o.delay = delay;
    return q.record("w", {o}).at(0);
  }

  int64_t count(const std::string& sql, const std::string& arg) {
    return conn.query(sql, arg).i64(0, 0);
  }
  int64_t events(const std::string& provider, const std::string& kind) {
    return conn
      .query("SELECT count(*) FROM spool_provider_events WHERE provider = $1 AND kind = $2",
             provider, kind)
      .i64(0, 0);
  }
  int64_t running(const std::string& provider) {
    return count("SELECT count(*) FROM stage_runs WHERE provider = $1 AND state = 'running'",
                 provider);
  }
  std::string breaker(const std::string& provider) {
    return conn.query("SELECT breaker_state FROM spool_providers WHERE name = $1", provider)
      .str(0, 0);
  }
  store::provider_status status(const std::string& provider) {
    for (auto& s : q.providers_status())
      if (s.name == provider)
        return s;
    FAIL("no provider " << provider);
    return {};
  }
};

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.rfind(prefix, 0) == 0;
}

} // namespace

// -- the plain claim ----------------------------------------------------------

TEST_CASE_METHOD(providers_fixture,
                 "a claim without provider neither admits nor records a provider",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "max_concurrent": 1}])");
  enqueue_n(3);
  auto got = q.claim("s", 3, "w", 60s);
  REQUIRE(got.size() == 3);
  for (auto& r : got)
    CHECK(r.provider.empty());
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE provider IS NOT NULL") == 0);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE provider IS NOT NULL") == 0);
  // claim_limited with no provider is the same claim.
  enqueue_n(2);
  auto more = q.claim_limited("s", 5, "w", 60s, "");
  CHECK(more.runs.size() == 2);
  CHECK(more.held_back.empty());
}

TEST_CASE_METHOD(providers_fixture, "a claim under an unknown provider is refused by name",
                 "[db][store][providers]") {
  enqueue_n(1);
  REQUIRE_THROWS_WITH(claim("nope", 1), Catch::Contains("\"nope\" is not configured"));
}

// -- max_concurrent -------------------------------------------------------------

TEST_CASE_METHOD(providers_fixture,
                 "max_concurrent holds exactly across workers claiming at once",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "max_concurrent": 3}])");
  enqueue_n(40);
  // Three workers, each on its own connection, claim at once: three runs in all.
  {
    std::atomic<int> claimed{0};
    std::vector<std::thread> ts;
    for (int w = 0; w < 3; ++w)
      ts.emplace_back([&, w] {
        pg::connection c{db.url()};
        store::store s{c};
        for (int i = 0; i < 5; ++i)
          claimed += static_cast<int>(
            s.claim_limited("s", 2, "w" + std::to_string(w), 60s, "kling").runs.size());
      });
    for (auto& t : ts)
      t.join();
    CHECK(claimed == 3);
    CHECK(running("kling") == 3);
  }
  conn.exec("UPDATE stage_runs SET state = 'ready', lease_owner = NULL, lease_token = NULL "
            "WHERE state = 'running'");
  // Then they claim, run and finish until the queue is empty: never more than
  // three in flight (counted while each holds its claims, a subset of the
  // time the database counts them).
  std::atomic<int> in_flight{0}, most{0}, done{0};
  std::vector<std::thread> ts;
  for (int w = 0; w < 3; ++w)
    ts.emplace_back([&, w] {
      pg::connection c{db.url()};
      store::store s{c};
      auto worker = "w" + std::to_string(w);
      for (int idle = 0; done < 40 && idle < 2000;) {
        auto got = s.claim_limited("s", 2, worker, 60s, "kling");
        if (got.runs.empty()) {
          ++idle;
          std::this_thread::sleep_for(1ms);
          continue;
        }
        auto now = in_flight += static_cast<int>(got.runs.size());
        for (int m = most; now > m && !most.compare_exchange_weak(m, now);) {
        }
        std::this_thread::sleep_for(2ms);
        in_flight -= static_cast<int>(got.runs.size());
        std::vector<store::outcome_record> os;
        for (auto& r : got.runs)
          os.push_back(store::outcome_record::for_claim(r, record_kind::ok));
        for (auto& rec : s.record(worker, os))
          done += rec.accepted ? 1 : 0;
      }
    });
  for (auto& t : ts)
    t.join();
  CHECK(done == 40);
  CHECK(most <= 3);
  CHECK(most >= 2);
}

TEST_CASE_METHOD(providers_fixture,
                 "claims far below the cap skip counting, and the cap still holds exactly",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "max_concurrent": 10}])");
  enqueue_n(30);
  auto first = claim("kling", 4);
  REQUIRE(first.runs.size() == 4);
  for (auto& r : first.runs)
    REQUIRE(finish(r, record_kind::ok).accepted);
  // The bound on calls in flight is 4 though none runs: 4 more fit under it.
  CHECK(claim("kling", 4).runs.size() == 4);
  // 8 + 4 would pass the cap: the claim counts (4 running) and admits 4.
  CHECK(claim("kling", 4).runs.size() == 4);
  CHECK(running("kling") == 8);
  auto last = claim("kling", 4);
  CHECK(last.runs.size() == 2);
  CHECK(starts_with(last.held_back, "max_concurrent 10 (10 running)"));
  CHECK(claim("kling", 4).runs.empty());
  CHECK(running("kling") == 10);

  // A new cap forgets the bound: counted again, exact either way.
  q.sync_providers(R"([{"name": "kling", "max_concurrent": 12}])");
  CHECK(claim("kling", 4).runs.size() == 2);
  CHECK(running("kling") == 12);
  q.sync_providers(R"([{"name": "kling", "max_concurrent": 5}])");
  auto held = claim("kling", 4);
  CHECK(held.runs.empty());
  CHECK(starts_with(held.held_back, "max_concurrent 5 (12 running)"));
  // Without a cap nothing keeps the bound; a cap set again counts.
  q.sync_providers(R"([{"name": "kling"}])");
  CHECK(claim("kling", 4).runs.size() == 4);
  q.sync_providers(R"([{"name": "kling", "max_concurrent": 17}])");
  CHECK(claim("kling", 4).runs.size() == 1);
  CHECK(running("kling") == 17);
}

TEST_CASE_METHOD(providers_fixture,
                 "slots come back when runs end or are rescued, and a rescue is no failure",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "max_concurrent": 2,
                         "breaker": {"consecutive_failures": 1, "failure_rate": 0,
                                     "window": 20, "cooldown_s": 30, "probes": 1}}])");
  enqueue_n(6);
  auto first = claim("kling", 5);
  REQUIRE(first.runs.size() == 2);
  CHECK(first.runs[0].provider == "kling");
  CHECK(starts_with(first.held_back, "max_concurrent 2 (2 running)"));
  CHECK(first.held_provider == "kling");
  CHECK_FALSE(first.wait); // until a running call ends
  CHECK(claim("kling", 5).runs.empty());

  REQUIRE(finish(first.runs[0], record_kind::ok).accepted);
  auto second = q.claim_limited("s", 5, "w", 1ms, "kling"); // a lease that expires at once
  REQUIRE(second.runs.size() == 1);
  CHECK(claim("kling", 5).runs.empty());

  std::this_thread::sleep_for(20ms);
  REQUIRE(q.rescue(10).size() == 1);
  CHECK(breaker("kling") == "closed");
  CHECK(claim("kling", 5).runs.size() == 1);
  CHECK(running("kling") == 2);
}

TEST_CASE_METHOD(providers_fixture,
                 "no held-back row when the limits are not what stopped the claim",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "max_concurrent": 5}])");
  enqueue_n(2);
  auto got = claim("kling", 10);
  CHECK(got.runs.size() == 2);
  CHECK(got.held_back.empty());
  CHECK(got.held_provider.empty());
  // Exactly at the cap with nothing left: not held back either.
  enqueue_n(3);
  got = claim("kling", 10);
  CHECK(got.runs.size() == 3);
  CHECK(got.held_back.empty());
}

TEST_CASE_METHOD(providers_fixture,
                 "the end of a call wakes every stage waiting for the provider's slots",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "max_concurrent": 1}])");
  enqueue_n(1, {}, "s1");
  enqueue_n(1, {}, "s2");
  auto got = claim("kling", 1, {}, "s1");
  REQUIRE(got.runs.size() == 1);
  auto held = claim("kling", 1, {}, "s2");
  REQUIRE(held.runs.empty());
  REQUIRE_FALSE(held.held_back.empty());

  pg::connection listener{db.url()};
  listener.listen("spool_wakeup");
  listener.drain_notifications();
  REQUIRE(finish(got.runs[0], record_kind::ok).accepted);
  std::set<std::string> woken;
  test::eventually([&] {
    listener.wait_readable(50ms);
    for (auto& n : listener.drain_notifications())
      woken.insert(n.payload);
    return woken.count("s1") && woken.count("s2");
  }, 5);
  CHECK(woken.count("s1") == 1);
  CHECK(woken.count("s2") == 1);
  CHECK(claim("kling", 1, {}, "s2").runs.size() == 1);
}

TEST_CASE_METHOD(providers_fixture, "cancelling a running call frees its slot at once",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "max_concurrent": 1,
                         "breaker": {"consecutive_failures": 1, "failure_rate": 0,
                                     "window": 20, "cooldown_s": 30, "probes": 1}}])");
  enqueue_n(2);
  auto got = claim("kling", 2);
  REQUIRE(got.runs.size() == 1);
  pg::connection listener{db.url()};
  listener.listen("spool_wakeup");
  REQUIRE(q.cancel(got.runs[0].task_id).size() == 1);
  bool woken = test::eventually([&] {
    listener.wait_readable(50ms);
    for (auto& n : listener.drain_notifications())
      if (n.payload == "s")
        return true;
    return false;
  }, 5);
  CHECK(woken);
  CHECK(breaker("kling") == "closed");
  CHECK(claim("kling", 2).runs.size() == 1);
}

// -- token bucket -----------------------------------------------------------------

TEST_CASE_METHOD(providers_fixture, "the token bucket lets a burst through, then the rate",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "rate": {"per_s": 4, "burst": 3}}])");
  enqueue_n(40);
  auto start = std::chrono::steady_clock::now();
  auto burst = claim("kling", 10);
  CHECK(burst.runs.size() == 3);
  CHECK(starts_with(burst.held_back, "rate 4/s (burst 3)"));
  REQUIRE(burst.wait);
  CHECK(burst.wait->count() > 0);
  CHECK(burst.wait->count() <= 250);

  // Then at most one call per 250 ms; claiming as fast as possible for a
  // second takes about four more.
  int total = 3;
  while (std::chrono::steady_clock::now() - start < 1200ms) {
    auto got = claim("kling", 10);
    total += static_cast<int>(got.runs.size());
    if (got.runs.empty()) {
      REQUIRE(got.wait);
      CHECK(got.wait->count() <= 250);
    }
    std::this_thread::sleep_for(10ms);
  }
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(total <= 3 + static_cast<int>(4 * elapsed) + 1);
  CHECK(total >= 3 + static_cast<int>(4 * 1.2) - 1);
}

// -- quota --------------------------------------------------------------------------

TEST_CASE_METHOD(providers_fixture,
                 "a quota with units_per_call admits what fits and says until when it is spent",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "daily_quota": {"units": 5, "reset_at": "00:00",
                         "time_zone": "America/Los_Angeles", "window_s": 86400,
                         "units_per_call": 2, "units_field": ""}}])");
  enqueue_n(5);
  auto got = claim("kling", 10);
  REQUIRE(got.runs.size() == 2);
  // The next call needs 2 units, 1 is left: spent until local midnight.
  auto midnight = conn.exec("SELECT to_char(((date_trunc('day', now() AT TIME ZONE "
                            "'America/Los_Angeles') + interval '1 day') AT TIME ZONE "
                            "'America/Los_Angeles') AT TIME ZONE 'UTC', "
                            "'YYYY-MM-DD HH24:MI:SS') || '+00'")
                    .str(0, 0);
  CHECK(starts_with(got.held_back, "quota spent until " + midnight));
  CHECK(got.held_back.find("4 of 5 units used") != std::string::npos);
  REQUIRE(got.wait);
  auto to_midnight = conn.exec("SELECT extract(epoch FROM ((date_trunc('day', now() AT TIME "
                               "ZONE 'America/Los_Angeles') + interval '1 day') AT TIME ZONE "
                               "'America/Los_Angeles') - now()) * 1000")
                       .f64(0, 0);
  CHECK(std::abs(static_cast<double>(got.wait->count()) - to_midnight) < 5000);
  CHECK(scalar("SELECT sum(units_charged)::bigint FROM stage_runs WHERE state = 'running'") == 4);

  // 80% crossed (4 of 5) and the next call does not fit: each event once.
  CHECK(events("kling", "quota_warning") == 1);
  CHECK(events("kling", "quota_exhausted") == 1);
  CHECK(claim("kling", 10).runs.empty());
  CHECK(claim("kling", 10).runs.empty());
  CHECK(events("kling", "quota_warning") == 1);
  CHECK(events("kling", "quota_exhausted") == 1);

  auto st = status("kling");
  CHECK(st.quota_used == Approx(4));
  CHECK(st.quota_remaining() == Approx(1));
}

TEST_CASE_METHOD(providers_fixture,
                 "a quota with units_field charges each run its payload's units",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "daily_quota": {"units": 10, "reset_at": "00:00",
                         "time_zone": "UTC", "window_s": 86400, "units_per_call": 1,
                         "units_field": "images"}}])");
  // 3 + 4 + 1 (absent) + 1 (not a number) = 9; the next one needs 5.
  enqueue_n(6, {R"({"images": 3})", R"({"images": 4})", "{}", R"({"images": "x"})",
                R"({"images": 5})", R"({"images": 1})"});
  auto got = claim("kling", 10);
  REQUIRE(got.runs.size() == 4);
  std::vector<double> units;
  for (auto& r : got.runs)
    units.push_back(conn.query("SELECT units_charged FROM stage_runs WHERE id = $1", r.run_id)
                      .f64(0, 0));
  CHECK(units == std::vector<double>{3, 4, 1, 1});
  CHECK(got.held_back.find("quota spent until") != std::string::npos);
  CHECK(got.held_back.find("the next call needs 5") != std::string::npos);
  CHECK(events("kling", "quota_warning") == 1); // 9 of 10
  CHECK(events("kling", "quota_exhausted") == 1);
  CHECK(status("kling").quota_used == Approx(9));
}

TEST_CASE_METHOD(providers_fixture, "a quota window of 2 s resets and admits again",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "daily_quota": {"units": 2, "reset_at": "00:00",
                         "time_zone": "UTC", "window_s": 2, "units_per_call": 1,
                         "units_field": ""}}])");
  enqueue_n(10);
  auto got = claim("kling", 10); // (one window: a claim reads the clock once)
  REQUIRE(got.runs.size() == 2);
  REQUIRE(got.wait);
  CHECK(got.wait->count() <= 2000);
  CHECK(starts_with(got.held_back, "quota spent until"));
  std::this_thread::sleep_for(*got.wait + 20ms);
  auto next = claim("kling", 10);
  CHECK(next.runs.size() == 2);
  CHECK(scalar("SELECT count(*) FROM spool_provider_usage WHERE units = 2") == 2);
  CHECK(events("kling", "quota_exhausted") == 2); // once in each window
}

TEST_CASE_METHOD(providers_fixture, "a released run gives its units back",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "daily_quota": {"units": 3, "reset_at": "00:00",
                         "time_zone": "UTC", "window_s": 86400, "units_per_call": 1,
                         "units_field": ""}}])");
  enqueue_n(5);
  auto got = claim("kling", 5);
  REQUIRE(got.runs.size() == 3);
  CHECK(claim("kling", 5).runs.empty());
  REQUIRE(finish(got.runs[0], record_kind::release).accepted);
  REQUIRE(finish(got.runs[1], record_kind::release).accepted);
  // A failure does not: the provider may have seen that call.
  REQUIRE(finish(got.runs[2], record_kind::retry, "transient").accepted);
  CHECK(status("kling").quota_used == Approx(1));
  CHECK(claim("kling", 5).runs.size() == 2);
}

TEST_CASE_METHOD(providers_fixture, "the window of a day follows reset_at in its time zone",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "daily_quota": {"units": 3, "reset_at": "06:30",
                         "time_zone": "Asia/Kolkata"}}])");
  auto st = status("kling");
  REQUIRE(st.quota_window_start);
  REQUIRE(st.quota_resets_at);
  CHECK(*st.quota_resets_at - *st.quota_window_start == 24h);
  auto now = std::chrono::system_clock::now();
  CHECK(*st.quota_window_start <= now);
  CHECK(now < *st.quota_resets_at);
  // 06:30 in Kolkata (UTC+05:30, no DST) is 01:00 UTC.
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(
                st.quota_resets_at->time_since_epoch())
                .count();
  CHECK(secs % 86400 == 3600);
  CHECK(st.quota_reset_at == "06:30");
  CHECK(st.quota_time_zone == "Asia/Kolkata");
}

// -- breaker ------------------------------------------------------------------------

TEST_CASE_METHOD(providers_fixture,
                 "a claim after a change of the quota's reset time charges the new window",
                 "[db][store][providers]") {
  // The counters row remembers the window of the last admission; a change of
  // the window's settings must not leave claims charging the old one.
  q.sync_providers(R"([{"name": "kling", "daily_quota": {"units": 100, "reset_at": "00:00",
                         "time_zone": "UTC"}}])");
  enqueue_n(4);
  REQUIRE(claim("kling", 2).runs.size() == 2);
  auto first = conn.query("SELECT window_start::text FROM spool_provider_usage").str(0, 0);
  // Twelve hours away from the first reset: always another window start.
  q.sync_providers(R"([{"name": "kling", "daily_quota": {"units": 100, "reset_at": "12:00",
                         "time_zone": "UTC"}}])");
  REQUIRE(claim("kling", 2).runs.size() == 2);
  CHECK(scalar("SELECT count(*) FROM spool_provider_usage") == 2);
  CHECK(count("SELECT units::bigint FROM spool_provider_usage WHERE window_start::text <> $1",
              first)
        == 2);
  auto st = status("kling");
  REQUIRE(st.quota_window_start);
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(
                st.quota_window_start->time_since_epoch())
                .count();
  CHECK(secs % 86400 == 12 * 3600);
  CHECK(st.quota_used == Approx(2));
}

TEST_CASE_METHOD(providers_fixture,
                 "the breaker opens after consecutive failures, probes when half-open, and "
                 "closes on a success",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "breaker": {"consecutive_failures": 3,
                         "failure_rate": 0, "window": 20, "cooldown_s": 0.5, "probes": 2}}])");
  enqueue_n(12);
  auto got = claim("kling", 4);
  REQUIRE(got.runs.size() == 4);
  // Neutral outcomes (permanent, release) neither count nor reset.
  finish(got.runs[0], record_kind::retry, "transient");
  finish(got.runs[1], record_kind::fail, "permanent");
  finish(got.runs[2], record_kind::retry, "network");
  CHECK(breaker("kling") == "closed");
  finish(got.runs[3], record_kind::retry, "timeout");
  CHECK(breaker("kling") == "open");
  CHECK(events("kling", "breaker_opened") == 1);

  // Open: nothing is claimed, nothing is failed.
  auto held = claim("kling", 4);
  CHECK(held.runs.empty());
  CHECK(starts_with(held.held_back, "breaker open until"));
  REQUIRE(held.wait);
  CHECK(held.wait->count() <= 500);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'failed'") == 1);

  // Half-open after the cooldown: two probes, then nothing while they run.
  std::this_thread::sleep_for(*held.wait + 20ms);
  auto probes = claim("kling", 4);
  REQUIRE(probes.runs.size() == 2);
  CHECK(breaker("kling") == "half_open");
  CHECK(events("kling", "breaker_half_open") == 1);
  CHECK(starts_with(probes.held_back, "breaker half-open (2 of 2 probe calls running)"));
  CHECK_FALSE(probes.wait);
  CHECK(claim("kling", 4).runs.empty());

  // A probe's success closes it; calls flow again.
  finish(probes.runs[0], record_kind::ok);
  CHECK(breaker("kling") == "closed");
  CHECK(events("kling", "breaker_closed") == 1);
  CHECK(claim("kling", 4).runs.size() == 4);
}

TEST_CASE_METHOD(providers_fixture, "a failed probe opens the breaker again",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "breaker": {"consecutive_failures": 1,
                         "failure_rate": 0, "window": 20, "cooldown_s": 0.3, "probes": 1}}])");
  enqueue_n(5);
  finish(claim("kling", 1).runs.at(0), record_kind::retry, "transient");
  REQUIRE(breaker("kling") == "open");
  std::this_thread::sleep_for(350ms);
  auto probe = claim("kling", 3);
  REQUIRE(probe.runs.size() == 1);
  REQUIRE(breaker("kling") == "half_open");
  finish(probe.runs[0], record_kind::retry, "network");
  CHECK(breaker("kling") == "open");
  CHECK(events("kling", "breaker_opened") == 2);
  auto held = claim("kling", 3);
  CHECK(held.runs.empty());
  CHECK(starts_with(held.held_back, "breaker open"));
}

TEST_CASE_METHOD(providers_fixture,
                 "the breaker opens when the failed share of the last window reaches the rate",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "breaker": {"consecutive_failures": 100,
                         "failure_rate": 0.5, "window": 4, "cooldown_s": 30, "probes": 1}}])");
  enqueue_n(8);
  auto got = claim("kling", 8);
  REQUIRE(got.runs.size() == 8);
  // F S F: two of three failed, but the window has not seen 4 calls yet.
  finish(got.runs[0], record_kind::retry, "transient");
  finish(got.runs[1], record_kind::ok);
  finish(got.runs[2], record_kind::retry, "transient");
  CHECK(breaker("kling") == "closed");
  // S: the window is full (F S F S), but only a failure opens it.
  finish(got.runs[3], record_kind::ok);
  CHECK(breaker("kling") == "closed");
  // F: the last 4 are S F S F, 2 of 4 = 0.5.
  finish(got.runs[4], record_kind::retry, "timeout");
  CHECK(breaker("kling") == "open");
  auto st = status("kling");
  CHECK(st.recent_calls == 4);
  CHECK(st.recent_failures == 2);
  CHECK(st.consecutive_failures == 1);
  REQUIRE(st.opened_at);
}

// -- pauses ---------------------------------------------------------------------------

TEST_CASE_METHOD(providers_fixture,
                 "a rate-limited outcome pauses its provider and no other",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling"}, {"name": "runway"}])");
  enqueue_n(4);
  enqueue_n(2, {}, "t");
  auto got = claim("kling", 1);
  REQUIRE(got.runs.size() == 1);
  REQUIRE(finish(got.runs[0], record_kind::snooze, "rate_limited", 800ms).accepted);
  CHECK(events("kling", "paused") == 1);

  auto held = claim("kling", 2);
  CHECK(held.runs.empty());
  CHECK(starts_with(held.held_back, "paused until"));
  CHECK(held.held_back.find("rate limited") != std::string::npos);
  REQUIRE(held.wait);
  CHECK(held.wait->count() > 500);
  CHECK(held.wait->count() <= 800);
  CHECK(claim("runway", 2, {}, "t").runs.size() == 2);
  auto st = status("kling");
  CHECK(st.paused_until);
  CHECK(st.pause_reason.find("rate limited") != std::string::npos);

  std::this_thread::sleep_for(*held.wait + 20ms);
  CHECK(claim("kling", 2).runs.size() == 2);
  CHECK_FALSE(status("kling").paused_until);
}

// -- fallback ---------------------------------------------------------------------------

TEST_CASE_METHOD(providers_fixture,
                 "runs go to the fallback while the primary's breaker is open",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "breaker": {"consecutive_failures": 1,
                         "failure_rate": 0, "window": 20, "cooldown_s": 60, "probes": 1}},
                       {"name": "runway", "max_concurrent": 2}])");
  enqueue_n(5);
  auto first = claim("kling", 1, "runway");
  REQUIRE(first.runs.size() == 1);
  CHECK(first.runs[0].provider == "kling");
  finish(first.runs[0], record_kind::retry, "transient");
  REQUIRE(breaker("kling") == "open");

  auto got = claim("kling", 5, "runway");
  REQUIRE(got.runs.size() == 2);
  for (auto& r : got.runs) {
    CHECK(r.provider == "runway");
    CHECK(conn.query("SELECT provider FROM stage_runs WHERE id = $1", r.run_id).str(0, 0)
          == "runway");
    CHECK(conn.query("SELECT provider FROM stage_attempts WHERE stage_run_id = $1 "
                     "AND attempt = $2",
                     r.run_id, r.attempt)
            .str(0, 0)
          == "runway");
  }
  CHECK(got.held_provider == "runway");
  CHECK(starts_with(got.held_back, "breaker open until"));
  CHECK(got.held_back.find("; fallback runway: max_concurrent 2 (2 running)")
        != std::string::npos);
  REQUIRE(got.wait); // the primary's cooldown
  CHECK(got.wait->count() > 50'000);

  // The provider that ran it stays on the run after it ends.
  finish(got.runs[0], record_kind::ok);
  CHECK(conn.query("SELECT provider FROM stage_runs WHERE id = $1", got.runs[0].run_id)
          .str(0, 0)
        == "runway");
}

TEST_CASE_METHOD(providers_fixture, "runs go to the fallback once the primary's quota is spent",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "daily_quota": {"units": 3, "reset_at": "00:00",
                         "time_zone": "UTC", "window_s": 86400, "units_per_call": 1,
                         "units_field": "images"}},
                       {"name": "runway"}])");
  enqueue_n(6, {R"({"images": 2})", R"({"images": 2})", "{}", "{}", "{}", "{}"});
  auto got = claim("kling", 1, "runway");
  REQUIRE(got.runs.size() == 1);
  CHECK(got.runs[0].provider == "kling");
  // 1 unit left, the next run needs 2: too small, the fallback takes them.
  auto fell = claim("kling", 10, "runway");
  REQUIRE(fell.runs.size() == 5);
  for (auto& r : fell.runs)
    CHECK(r.provider == "runway");
  CHECK(fell.held_back.empty());
  CHECK(status("kling").quota_used == Approx(2));
  CHECK(events("kling", "quota_exhausted") == 1);
}

TEST_CASE_METHOD(providers_fixture, "a primary held by its rate does not fall back",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "rate": {"per_s": 0.1, "burst": 1}},
                       {"name": "runway"}])");
  enqueue_n(3);
  CHECK(claim("kling", 3, "runway").runs.size() == 1);
  auto held = claim("kling", 3, "runway");
  CHECK(held.runs.empty());
  CHECK(held.held_provider == "kling");
  CHECK(starts_with(held.held_back, "rate"));
  CHECK(running("runway") == 0);
}

// -- events, sync, status ----------------------------------------------------------------

TEST_CASE_METHOD(providers_fixture, "each provider event is taken by exactly one worker",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling"}])");
  conn.query("INSERT INTO spool_provider_events (provider, kind, message) "
             "SELECT 'kling', 'paused', 'event ' || g FROM generate_series(1, $1) g",
             200);
  std::mutex m;
  std::vector<int64_t> seen;
  std::vector<std::thread> ts;
  for (int w = 0; w < 2; ++w)
    ts.emplace_back([&, w] {
      pg::connection c{db.url()};
      store::store s{c};
      for (;;) {
        auto got = s.take_provider_events("w" + std::to_string(w), 7);
        if (got.empty())
          return;
        std::lock_guard lock{m};
        for (auto& e : got) {
          CHECK(e.provider == "kling");
          CHECK(e.kind == "paused");
          seen.push_back(e.id);
        }
      }
    });
  for (auto& t : ts)
    t.join();
  std::sort(seen.begin(), seen.end());
  CHECK(seen.size() == 200);
  CHECK(std::unique(seen.begin(), seen.end()) == seen.end());
  CHECK(scalar("SELECT count(*) FROM spool_provider_events WHERE logged_by IS NULL") == 0);
  CHECK(q.take_provider_events("w9").empty());
}

TEST_CASE_METHOD(providers_fixture,
                 "syncing keeps each provider's state, clamps its tokens, and leaves others alone",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "rate": {"per_s": 0.01, "burst": 10},
                         "breaker": {"consecutive_failures": 1, "failure_rate": 0,
                                     "window": 20, "cooldown_s": 60, "probes": 1}},
                       {"name": "runway", "max_concurrent": 1}])");
  // A new provider starts with a full bucket.
  CHECK(status("kling").tokens == Approx(10).margin(0.1));
  enqueue_n(10);
  auto got = claim("kling", 6);
  REQUIRE(got.runs.size() == 6);
  finish(got.runs[0], record_kind::retry, "transient");
  REQUIRE(breaker("kling") == "open");

  // A smaller burst clamps the tokens (4 left, burst 2); the breaker stays
  // open; runway, not listed, keeps its limits.
  q.sync_providers(R"([{"name": "kling", "rate": {"per_s": 0.01, "burst": 2},
                         "breaker": {"consecutive_failures": 1, "failure_rate": 0,
                                     "window": 20, "cooldown_s": 60, "probes": 1}}])");
  auto st = status("kling");
  CHECK(st.tokens == Approx(2).margin(0.1));
  CHECK(st.rate_burst == Approx(2));
  CHECK(st.breaker_state == "open");
  CHECK(status("runway").max_concurrent == 1);

  // Without its breaker, it is closed and the tokens are what is left.
  q.sync_providers(R"([{"name": "kling", "rate": {"per_s": 0.01, "burst": 5}}])");
  st = status("kling");
  CHECK(st.breaker_state == "closed");
  CHECK_FALSE(st.breaker);
  CHECK(st.tokens == Approx(2).margin(0.1));
  CHECK(claim("kling", 10).runs.size() == 2);
}

TEST_CASE_METHOD(providers_fixture, "a bad time zone is refused naming its provider",
                 "[db][store][providers]") {
  REQUIRE_THROWS_WITH(
    q.sync_providers(R"([{"name": "kling", "daily_quota": {"units": 3,
                          "time_zone": "Mars/Olympus"}}])"),
    Catch::Contains("provider \"kling\": daily_quota"));
  CHECK(q.providers_status().empty());
}

TEST_CASE_METHOD(providers_fixture, "the status shows limits, running calls and last events",
                 "[db][store][providers]") {
  q.sync_providers(R"([{"name": "kling", "max_concurrent": 3,
                         "rate": {"per_s": 0.01, "burst": 4},
                         "daily_quota": {"units": 500, "reset_at": "00:00",
                                         "time_zone": "America/Los_Angeles", "window_s": 86400,
                                         "units_per_call": 1, "units_field": "images"},
                         "breaker": {"consecutive_failures": 5, "failure_rate": 0.5,
                                     "window": 20, "cooldown_s": 30, "probes": 1}},
                       {"name": "plain"}])");
  enqueue_n(2, {R"({"images": 7})", "{}"});
  REQUIRE(claim("kling", 2).runs.size() == 2);
  conn.query("INSERT INTO spool_provider_events (provider, kind, message) "
             "SELECT 'kling', 'paused', 'event ' || g FROM generate_series(1, $1) g",
             8);

  auto all = q.providers_status(3);
  REQUIRE(all.size() == 2);
  auto& k = all[0];
  CHECK(k.name == "kling");
  CHECK(k.max_concurrent == 3);
  CHECK(k.rate_per_s == Approx(0.01));
  CHECK(k.rate_burst == Approx(4));
  CHECK(k.quota_units == Approx(500));
  CHECK(k.quota_units_field == "images");
  REQUIRE(k.breaker);
  CHECK(k.breaker->failure_rate == Approx(0.5));
  CHECK(k.breaker->window == 20);
  CHECK(k.running == 2);
  REQUIRE(k.tokens);
  CHECK(*k.tokens >= 2);
  CHECK(*k.tokens < 2.1);
  CHECK(k.quota_used == Approx(8));
  CHECK(k.quota_remaining() == Approx(492));
  CHECK(k.breaker_state == "closed");
  CHECK_FALSE(k.paused_until);
  REQUIRE(k.events.size() == 3);
  CHECK(k.events[0].message == "event 8");
  CHECK(k.events[0].id > k.events[1].id);
  CHECK(k.events[0].logged_by.empty());

  auto& p = all[1];
  CHECK(p.name == "plain");
  CHECK_FALSE(p.rate_per_s);
  CHECK_FALSE(p.tokens);
  CHECK_FALSE(p.quota_units);
  CHECK_FALSE(p.quota_used);
  CHECK_FALSE(p.breaker);
  CHECK(p.events.empty());
}
