// Provider limits held across real workers: a global concurrency cap, a
// token bucket, a quota window, Retry-After pauses, the circuit breaker, the
// fallback, and slots that come back with a dead worker's leases.

#include "tests/support/worker_fixture.hpp"

#include <cmath>
#include <csignal>
#include <cstdio>
#include <memory>
#include <unistd.h>

using namespace spool;
using namespace spool::test;

namespace {

/// A config with short worker intervals, the given providers and stages.
std::string provider_config(const std::string& providers, const std::string& stages) {
  return temp_file(R"({"worker": {"idle_poll_s": 0.2, "heartbeat_interval_s": 0.3,
    "rescue_interval_s": 0.3, "shutdown_grace_s": 5, "lease_s": 2},
    "providers": [)" + providers + R"(], "stages": [)" + stages + "]}");
}

/// A command stage: `script` (sh) reads the job on stdin and prints a result.
std::string command_stage(const std::string& name, const std::string& provider,
                          const std::string& script, int max_concurrent,
                          const std::string& extra = "") {
  std::string escaped;
  for (char c : script) {
    if (c == '"' || c == '\\')
      escaped += '\\';
    escaped += c;
  }
  return R"({"name": ")" + name + R"(", "provider": ")" + provider
         + R"(", "max_concurrent": )" + std::to_string(max_concurrent) + R"(, "timeout_s": 30, "executor": {"kind": "command", "argv": ["sh", "-c", ")"
         + escaped + R"("]})" + extra + "}";
}

using workers = std::vector<std::unique_ptr<spool_process>>;

workers start(int n, const std::string& cfg, const std::map<std::string, std::string>& env,
              bool exit_when_idle = true) {
  workers ws;
  std::vector<std::string> args{"run", "--config", cfg};
  if (exit_when_idle)
    args.push_back("--exit-when-idle");
  for (int i = 0; i < n; ++i)
    ws.push_back(std::make_unique<spool_process>(args, env));
  return ws;
}

std::string all_output(const workers& ws) {
  std::string out;
  for (auto& w : ws)
    out += w->output();
  return out;
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

} // namespace

TEST_CASE_METHOD(worker_fixture, "a provider's max_concurrent holds across three workers",
                 "[db][worker][providers]") {
  auto cfg = provider_config(R"({"name": "kling", "max_concurrent": 3})",
                             R"({"name": "video", "provider": "kling", "max_concurrent": 4,
      "executor": {"latency": {"dist": "fixed", "ms": 300}}})");
  enqueue(cfg, 30);
  auto ws = start(3, cfg, env);
  for (auto& w : ws)
    CHECK(w->wait(120) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 30);
  // 12 stage actors in all, never more than 3 calls at once, and 3 reached.
  CHECK(max_overlap("video") == 3);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE provider = 'kling'") == 30);
}

TEST_CASE_METHOD(worker_fixture, "a provider's rate holds over any window across workers",
                 "[db][worker][providers]") {
  auto cfg = provider_config(R"({"name": "llm", "rate": {"per_s": 10, "burst": 5}})",
                             R"({"name": "story", "provider": "llm", "max_concurrent": 8,
      "executor": {"latency": {"dist": "fixed", "ms": 5}}})");
  enqueue(cfg, 80);
  auto ws = start(2, cfg, env);
  for (auto& w : ws)
    CHECK(w->wait(120) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 80);
  // Calls started in any 5 s window: at most 10 * 5 + 5.
  auto most = scalar("SELECT max((SELECT count(*) FROM stage_attempts b WHERE b.started_at >= "
                     "a.started_at AND b.started_at < a.started_at + interval '5 seconds')) "
                     "FROM stage_attempts a");
  CHECK(most <= 55);
  CHECK(most >= 40); // and the rate is used, not starved
}

TEST_CASE_METHOD(worker_fixture, "a quota is used exactly, warned at 80 % once, and resets",
                 "[db][worker][providers]") {
  // 40 units a window of 8 s; each task uses 2 (payload "images": 2).
  auto cfg = provider_config(
    R"({"name": "img", "daily_quota": {"units": 40, "window_s": 8, "units_field": "images"}})",
    R"({"name": "images", "provider": "img", "max_concurrent": 4,
      "executor": {"latency": {"dist": "fixed", "ms": 10}}})");
  enqueue(cfg, 30, 3, R"({"images": 2})");
  // Start early in a window (they begin at multiples of 8 s since the
  // epoch), so that the first one fills before it ends.
  auto now_s = std::chrono::duration<double>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  auto into = std::fmod(now_s, 8.0);
  if (into > 1.0)
    std::this_thread::sleep_for(std::chrono::duration<double>(8.0 - into + 0.2));
  auto ws = start(2, cfg, env, false);
  // 20 tasks fit the first window; the other 10 wait for the next one.
  REQUIRE(wait_for("SELECT count(*) FROM tasks WHERE state = 'completed'", 20));
  CHECK(wait_for("SELECT count(*) FROM tasks WHERE state = 'completed'", 30, 60));
  CHECK(scalar("SELECT max(units)::bigint FROM spool_provider_usage WHERE provider = 'img'")
        == 40);
  CHECK(scalar("SELECT sum(units)::bigint FROM spool_provider_usage WHERE provider = 'img'")
        == 60);
  for (auto& w : ws)
    w->signal(SIGTERM);
  for (auto& w : ws)
    CHECK(w->wait(60) == 0);
  auto out = all_output(ws);
  // Logged once per window by one worker of the two (two windows filled
  // past 80 %: the first and, with 20 of 40, not the second).
  CHECK(count_of(out, "quota_warning (img)") == 1);
  CHECK(count_of(out, "quota_exhausted (img)") == 1);
  auto shown = run_spool({"providers"}, env);
  CHECK(shown.exit_code == 0);
  CHECK_THAT(shown.out, Catch::Contains("quota_exhausted"));
}

TEST_CASE_METHOD(worker_fixture, "a Retry-After pauses the provider for every worker",
                 "[db][worker][providers]") {
  auto marker = temp_file("", ".marker");
  std::remove(marker.c_str());
  // The first call answers 429 with Retry-After 2 s; the rest succeed.
  auto script = "cat > /dev/null; if mkdir " + marker
                + " 2>/dev/null; then echo '{\"status\": \"error\", \"class\": \"rate_limited\", "
                  "\"retry_after_s\": 2, \"message\": \"429\"}'; else echo '{\"status\": \"ok\", \"output\": {}}'; fi";
  auto cfg = provider_config(
    R"({"name": "tts"}, {"name": "sfx_api"})",
    command_stage("narration", "tts", script, 1) + R"(, {"name": "sfx", "provider": "sfx_api",
      "max_concurrent": 2, "executor": {"latency": {"dist": "fixed", "ms": 100}}})");
  enqueue(cfg, 12);
  auto ws = start(2, cfg, env);
  for (auto& w : ws)
    CHECK(w->wait(120) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 12);
  // No narration call started within 2 s of the 429 (a margin of 0.2 s for
  // a claim admitted while its outcome was being recorded), while sfx went
  // on.
  auto limited = "(SELECT finished_at FROM stage_attempts WHERE outcome = 'snoozed')";
  CHECK(scalar(std::string{"SELECT count(*) FROM stage_attempts WHERE stage = 'narration' "
                           "AND started_at > "}
               + limited + " + interval '0.2 seconds' AND started_at < " + limited
               + " + interval '1.9 seconds'")
        == 0);
  CHECK(scalar(std::string{"SELECT count(*) FROM stage_attempts WHERE stage = 'sfx' "
                           "AND started_at > "}
               + limited + " AND started_at < " + limited + " + interval '1.9 seconds'")
        > 0);
  CHECK_THAT(all_output(ws), Catch::Contains("paused (tts)"));
  rmdir(marker.c_str());
}

TEST_CASE_METHOD(worker_fixture, "a breaker opens, probes after its cooldown and closes",
                 "[db][worker][providers]") {
  auto counter = temp_file("");
  // The first 5 calls fail (transient), every later one succeeds.
  auto script = "cat > /dev/null; n=$(wc -c < " + counter + "); printf x >> " + counter
                + "; if [ \"$n\" -lt 5 ]; then echo '{\"status\": \"error\", \"class\": \"transient\", "
                  "\"message\": \"503\"}'; else echo '{\"status\": \"ok\", \"output\": {}}'; fi";
  auto cfg = provider_config(
    R"({"name": "kling", "breaker": {"consecutive_failures": 5, "cooldown_s": 2, "probes": 1}})",
    command_stage("video", "kling", script, 1,
                  R"(, "retry": {"max_retries": 10, "base_s": 0.05, "jitter": 0})"));
  enqueue(cfg, 8);
  // One call at a time, so that the five failures are consecutive.
  auto ws = start(1, cfg, env);
  for (auto& w : ws)
    CHECK(w->wait(120) == 0);
  // No run failed because the breaker was open.
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 8);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE outcome = 'retry'") == 5);
  // Nothing started while it was open (a margin of 0.2 s for a claim
  // admitted while the outcome that opened it was being recorded).
  auto opened = "(SELECT at FROM spool_provider_events WHERE kind = 'breaker_opened')";
  CHECK(scalar(std::string{"SELECT count(*) FROM stage_attempts WHERE started_at > "} + opened
               + " + interval '0.2 seconds' AND started_at < " + opened
               + " + interval '1.9 seconds'")
        == 0);
  auto out = all_output(ws);
  CHECK_THAT(out, Catch::Contains("breaker_opened (kling)"));
  CHECK_THAT(out, Catch::Contains("breaker_half_open (kling)"));
  CHECK_THAT(out, Catch::Contains("breaker_closed (kling)"));
  std::remove(counter.c_str());
}

TEST_CASE_METHOD(worker_fixture, "a killed worker's provider slots come back with its leases",
                 "[db][worker][providers]") {
  auto cfg = provider_config(R"({"name": "kling", "max_concurrent": 2})",
                             R"({"name": "video", "provider": "kling", "max_concurrent": 4,
      "executor": {"latency": {"dist": "fixed", "ms": 1500}}})");
  enqueue(cfg, 6);
  {
    spool_process first{{"run", "--config", cfg}, env};
    REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE state = 'running'", 2));
    first.signal(SIGKILL);
    first.wait(10);
  }
  // Its two runs hold the slots until rescued; then a second worker gets
  // them and finishes everything, never more than 2 at once.
  spool_process second{{"run", "--config", cfg, "--exit-when-idle"}, env};
  CHECK(second.wait(120) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 6);
  CHECK(max_overlap("video") <= 2);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE outcome = 'lost'") == 2);
}

TEST_CASE_METHOD(worker_fixture, "workers send runs to the fallback while the primary's breaker is open",
                 "[db][worker][providers]") {
  auto cfg = provider_config(
    R"({"name": "kling", "breaker": {"consecutive_failures": 3, "cooldown_s": 600}},
       {"name": "runway"})",
    command_stage("video", "kling",
                  "cat > /dev/null; echo '{\"status\": \"error\", \"class\": \"transient\", "
                  "\"message\": \"503\"}'",
                  1, R"(, "retry": {"max_retries": 5, "base_s": 0.05, "jitter": 0},
      "fallback": {"provider": "runway", "executor": {"latency": {"dist": "fixed", "ms": 10}}})"));
  enqueue(cfg, 10);
  auto ws = start(1, cfg, env);
  CHECK(ws[0]->wait(120) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 10);
  // Kling took calls until its breaker opened (claims racing the outcome
  // that opened it included), none after.
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE provider = 'kling'") >= 3);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE provider = 'kling' AND started_at > "
               "(SELECT at FROM spool_provider_events WHERE kind = 'breaker_opened') "
               "+ interval '0.2 seconds'")
        == 0);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE provider = 'runway' AND state = 'done'")
        == 10);
}
