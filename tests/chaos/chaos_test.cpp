// The chaos suite: real `spool run` workers against a PostgreSQL cluster of
// the test's own (tests/support/pg_cluster.hpp) while workers are killed, the
// server is restarted or frozen, and a stage program prints poison. Each case
// waits for conditions under generous deadlines, never asserts on timing, and
// ends with the same checks: every task terminal, no run with two `ok`
// attempts, nothing left running, the good tasks completed (each stage's cost
// applied exactly once), and every worker exiting by itself with code 0 with
// a log of one-line records that does not repeat itself. Each prints a
// one-line summary (tasks, kills, restarts, elapsed) to quote.

#include "runtime/pg/connection.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/pg_cluster.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

using namespace spool;
using namespace std::chrono_literals;
using test::spool_process;
namespace fs = std::filesystem;

namespace {

using steady = std::chrono::steady_clock;

const char* const terminal_states = "('completed', 'partially_completed', 'failed', 'cancelled')";

/// Worker settings that make leases expire and rescues happen within seconds.
const char* const fast_worker = R"({"idle_poll_s": 0.2, "heartbeat_interval_s": 0.5,
  "lease_s": 3, "rescue_interval_s": 0.5, "shutdown_grace_s": 1,
  "stuck_sweep_interval_s": 10, "progress_log_interval_s": 5})";

/// Retries that resolve within about a second, so that injected errors
/// never decide a case's length.
const char* const quick_retry = R"({"max_retries": 3, "base_s": 0.1, "factor": 2,
  "jitter": 0.2, "max_delay_s": 1})";

/// The shipped pipeline's DAG (asset_gen; then video_gen, narration and sfx
/// side by side; then assembly) with short simulated latencies and injected
/// transient, network and rate-limited errors, and assembly as a `command`
/// stage running a real (tiny) program. Every good task costs `pipeline_cost`.
std::string pipeline_stages(int video_gen_concurrency) {
  std::string retry = quick_retry;
  return R"(
    {"name": "asset_gen", "max_concurrent": 5, "retry": )" + retry + R"(,
     "executor": {"latency": {"dist": "uniform", "min_ms": 30, "max_ms": 120},
       "errors": {"transient": 0.02, "rate_limited": 0.02}, "retry_after_s": 0.3,
       "cost": 0.04, "seed": 101}},
    {"name": "video_gen", "after": ["asset_gen"], "max_concurrent": )"
         + std::to_string(video_gen_concurrency) + R"(, "retry": )" + retry + R"(,
     "executor": {"latency": {"dist": "uniform", "min_ms": 400, "max_ms": 1000},
       "errors": {"transient": 0.02, "network": 0.01, "rate_limited": 0.02},
       "retry_after_s": 0.3, "cost": 0.5, "seed": 102}},
    {"name": "narration", "after": ["asset_gen"], "max_concurrent": 5, "retry": )"
         + retry + R"(,
     "executor": {"latency": {"dist": "uniform", "min_ms": 30, "max_ms": 150},
       "errors": {"transient": 0.01}, "cost": 0.05, "seed": 103}},
    {"name": "sfx", "after": ["asset_gen"], "max_concurrent": 5, "retry": )" + retry + R"(,
     "executor": {"latency": {"dist": "uniform", "min_ms": 20, "max_ms": 100},
       "cost": 0.02, "seed": 104}},
    {"name": "assembly", "after": ["video_gen", "narration", "sfx"], "max_concurrent": 3,
     "timeout_s": 30, "retry": )" + retry + R"(,
     "executor": {"kind": "command", "kill_grace_s": 1, "argv": ["sh", "-c",
       "cat >/dev/null; echo '{\"status\":\"ok\",\"output\":{\"video_url\":\"assembled.mp4\"},\"cost\":0.01}'"]}})";
}
constexpr const char* pipeline_cost = "0.62"; // 0.04 + 0.5 + 0.05 + 0.02 + 0.01

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

/// Whether `text` mentions any of `words` (case-insensitive).
bool mentions(const std::string& text, const std::vector<const char*>& words) {
  auto t = lower(text);
  return std::any_of(words.begin(), words.end(),
                     [&](const char* w) { return t.find(lower(w)) != std::string::npos; });
}

/// The last `n` lines of `text`, each cut at 300 characters.
std::string tail(const std::string& text, std::size_t n = 40) {
  std::vector<std::string> lines;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    lines.push_back(line.size() > 300 ? line.substr(0, 300) + "..." : line);
  std::string out;
  for (auto i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i)
    out += lines[i] + "\n";
  return out;
}

/// Lines in `text`, and the length of the longest.
std::pair<std::size_t, std::size_t> line_stats(const std::string& text) {
  std::size_t lines = 0, longest = 0;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);) {
    ++lines;
    longest = std::max(longest, line.size());
  }
  return {lines, longest};
}

/// Checks what a worker's log must look like after any amount of trouble:
/// one record a line (a libpq message's embedded newlines, or a function's
/// source, make several), and no warning or error repeated over and over:
/// a worker says once that the database went away and once that it came
/// back, rather than at every failed call.
void check_log(const std::string& name, const std::string& log) {
  // "2026-12-01 22:35:41.694 ": digits where the pattern has 'd'.
  auto stamped = [](const std::string& line) {
    constexpr std::string_view shape = "dddd-dd-dd dd:dd:dd.ddd ";
    if (line.size() < shape.size())
      return false;
    for (std::size_t i = 0; i < shape.size(); ++i)
      if (shape[i] == 'd' ? !std::isdigit(static_cast<unsigned char>(line[i]))
                          : line[i] != shape[i])
        return false;
    return true;
  };
  std::vector<std::string> continuation;
  std::map<std::string, int> repeats;
  std::istringstream in{log};
  for (std::string line; std::getline(in, line);) {
    if (line.empty())
      continue;
    if (!stamped(line)) {
      continuation.push_back(line.substr(0, 200));
      continue;
    }
    auto message = line.substr(24); // the level, then the text
    if (message.rfind("warning", 0) == 0 || message.rfind("error", 0) == 0
        || message.rfind("critical", 0) == 0)
      ++repeats[message];
  }
  std::string shown;
  for (std::size_t i = 0; i < continuation.size() && i < 5; ++i)
    shown += continuation[i] + "\n";
  INFO(name << ": " << continuation.size()
            << " log lines continue a record (a multi-line message):\n"
            << shown);
  CHECK(continuation.empty());
  auto most = std::max_element(repeats.begin(), repeats.end(),
                               [](auto& a, auto& b) { return a.second < b.second; });
  if (most != repeats.end()) {
    INFO(name << " logged " << most->second << " times: " << most->first.substr(0, 300));
    CHECK(most->second <= 4);
  }
}

/// A worker the case watches: it must not exit before the work is done,
/// except where the case kills it.
struct watched {
  std::string name;
  spool_process* proc;
};

struct chaos_fixture {
  test::pg_cluster cluster;
  std::string url = cluster.url();
  std::map<std::string, std::string> env{{"SPOOL_DATABASE_URL", url}};
  steady::time_point started = steady::now();
  std::optional<pg::connection> probe_conn;
  int64_t total_tasks = 0;

  chaos_fixture() {
    auto res = test::run_spool({"migrate", "up"}, env);
    INFO(res.out << res.err);
    REQUIRE(res.exit_code == 0);
  }

  double elapsed_s() const {
    return std::chrono::duration<double>(steady::now() - started).count();
  }

  /// Writes a config with the fast worker settings and `stages`.
  std::string config(const std::string& stages) {
    auto path = cluster.scratch_dir() / ("config" + std::to_string(++configs_) + ".json");
    std::ofstream{path} << R"({"data_dir": ")" << (cluster.scratch_dir() / "data").string()
                        << R"(", "worker": )" << fast_worker << R"(, "stages": [)" << stages
                        << "]}";
    return path.string();
  }

  /// Enqueues one video per payload through the CLI, over `channels` channels.
  void enqueue(const std::string& cfg, const std::vector<std::string>& payloads,
               int channels) {
    std::string lines;
    for (std::size_t i = 0; i < payloads.size(); ++i)
      lines += R"({"channel_id": "ch)" + std::to_string(i % channels) + R"(", "payload": )"
               + payloads[i] + "}\n";
    auto res = test::run_spool({"enqueue", "--config", cfg, "--file", "-"}, env, lines);
    INFO(res.out << res.err);
    REQUIRE(res.exit_code == 0);
    total_tasks += static_cast<int64_t>(payloads.size());
  }

  /// A count from the database; nullopt while it cannot be reached (the
  /// connection is made again on the next call). Never called while the
  /// server is paused.
  std::optional<int64_t> count(const std::string& sql) {
    try {
      if (!probe_conn || !probe_conn->ok())
        probe_conn.emplace(url, 5s);
      return probe_conn->exec(sql).i64(0, 0);
    } catch (const std::exception&) {
      probe_conn.reset();
      return std::nullopt;
    }
  }

  int64_t terminal_tasks() {
    return count(std::string{"SELECT count(*) FROM tasks WHERE state IN "} + terminal_states)
      .value_or(-1);
  }

  /// Task and stage-run state counts, for failure messages.
  std::string snapshot() {
    try {
      pg::connection c{url, 5s};
      auto t = c.exec("SELECT string_agg(state::text || '=' || n, ' ' ORDER BY state) "
                      "FROM (SELECT state, count(*) AS n FROM tasks GROUP BY 1) x");
      auto r = c.exec("SELECT string_agg(stage || '/' || state::text || '=' || n, ' ' "
                      "ORDER BY stage, state) "
                      "FROM (SELECT stage, state, count(*) AS n FROM stage_runs GROUP BY 1, 2) x");
      return "tasks: " + t.opt_str(0, 0).value_or("none") + "\nstage runs: "
             + r.opt_str(0, 0).value_or("none") + "\n";
    } catch (const std::exception& e) {
      return std::string{"(no snapshot: "} + e.what() + ")\n";
    }
  }

  std::string report(const std::vector<watched>& workers) {
    std::string out = snapshot();
    for (auto& w : workers)
      out += "--- " + w.name + " (pid " + std::to_string(w.proc->pid()) + ") log tail:\n"
             + tail(w.proc->output());
    out += "--- server log tail:\n" + cluster.log_tail(15);
    return out;
  }

  /// Fails the case when one of `workers` has exited.
  void require_alive(const std::vector<watched>& workers, const std::string& during) {
    for (auto& w : workers) {
      if (w.proc->running())
        continue;
      int code = w.proc->wait(0);
      FAIL(w.name << " exited (code " << code << ") " << during << "\n" << report(workers));
    }
  }

  /// Polls `done` every 100 ms until it holds; fails the case when
  /// `deadline_s` passes first or when one of `workers` exits meanwhile.
  void wait_until(const std::string& what, double deadline_s,
                  const std::vector<watched>& workers, const std::function<bool()>& done) {
    auto deadline = steady::now() + std::chrono::duration<double>(deadline_s);
    while (!done()) {
      require_alive(workers, "while waiting for " + what);
      if (steady::now() > deadline)
        FAIL("no " << what << " within " << deadline_s << " s\n" << report(workers));
      std::this_thread::sleep_for(100ms);
    }
  }

  void wait_all_terminal(double deadline_s, const std::vector<watched>& workers) {
    wait_until("end state: every task terminal", deadline_s, workers,
               [&] { return terminal_tasks() == total_tasks; });
  }

  /// Once the work is done every worker exits by itself (--exit-when-idle)
  /// with code 0, and its log passes check_log().
  void require_clean_exits(const std::vector<watched>& workers) {
    for (auto& w : workers) {
      int code = w.proc->wait(60);
      {
        INFO(w.name << " log tail:\n" << tail(w.proc->output()));
        CHECK(code == 0);
      }
      check_log(w.name, w.proc->output());
    }
  }

  /// The checks every case ends with. `good` selects the tasks that must
  /// have completed (`expect_good` of them), each costing `good_cost`.
  void check_end_state(const std::string& good, int64_t expect_good,
                       const std::string& good_cost) {
    pg::connection c{url, 10s};
    auto scalar = [&](const std::string& sql) { return c.exec(sql).i64(0, 0); };
    INFO(snapshot());
    CHECK(scalar(std::string{"SELECT count(*) FROM tasks WHERE state NOT IN "}
                 + terminal_states)
          == 0);
    // Nothing applied twice: no run has two ok attempts...
    CHECK(scalar("SELECT count(*) FROM (SELECT stage_run_id FROM stage_attempts "
                 "WHERE outcome = 'ok' GROUP BY stage_run_id HAVING count(*) > 1) x")
          == 0);
    CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'running'") == 0);
    CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed' AND (" + good + ")")
          == expect_good);
    // ...every run of a completed task is done, and its task was charged
    // each stage's cost exactly once.
    CHECK(scalar("SELECT count(*) FROM stage_runs r JOIN tasks t ON t.id = r.task_id "
                 "WHERE t.state = 'completed' AND r.state <> 'done'")
          == 0);
    CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed' AND (" + good
                 + ") AND actual_cost <> " + good_cost)
          == 0);
  }

  void summary(const std::string& scenario, int kills, int restarts, int pauses,
               const std::vector<watched>& workers) {
    pg::connection c{url, 10s};
    auto scalar = [&](const std::string& sql) { return c.exec(sql).i64(0, 0); };
    std::size_t log_lines = 0;
    for (auto& w : workers)
      log_lines += line_stats(w.proc->output()).first;
    std::printf("chaos summary: %s: %lld tasks (%lld completed, %lld failed), %lld attempts "
                "(%lld lost leases), %d kills, %d restarts, %d pauses, %zu log lines, %.1f s\n",
                scenario.c_str(), static_cast<long long>(total_tasks),
                static_cast<long long>(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'")),
                static_cast<long long>(scalar("SELECT count(*) FROM tasks WHERE state = 'failed'")),
                static_cast<long long>(scalar("SELECT count(*) FROM stage_attempts")),
                static_cast<long long>(
                  scalar("SELECT count(*) FROM stage_attempts WHERE outcome = 'lost'")),
                kills, restarts, pauses, log_lines, elapsed_s());
    // SPOOL_CHAOS_LOGS=1 prints the workers' logs too, to see what they
    // said while the database was away.
    if (const char* v = std::getenv("SPOOL_CHAOS_LOGS"); v != nullptr && *v == '1')
      for (auto& w : workers)
        std::printf("--- %s log:\n%s", w.name.c_str(), tail(w.proc->output(), 1000).c_str());
    std::fflush(stdout);
  }

  /// Fails the case when one of `workers` exits within `how_long`.
  void stay_alive(std::chrono::seconds how_long, const std::vector<watched>& workers,
                  const std::string& during) {
    auto until = steady::now() + how_long;
    while (steady::now() < until) {
      require_alive(workers, during);
      std::this_thread::sleep_for(100ms);
    }
  }

  /// The end of a case on the shipped pipeline: every task terminal within
  /// `deadline_s`, clean exits, the end-state checks (every task good), and
  /// the summary line.
  void finish_pipeline_case(const std::string& scenario, int kills, int restarts, int pauses,
                            const std::vector<watched>& workers, double deadline_s = 240) {
    wait_all_terminal(deadline_s, workers);
    require_clean_exits(workers);
    check_end_state("true", total_tasks, pipeline_cost);
    summary(scenario, kills, restarts, pauses, workers);
  }

private:
  int configs_ = 0;
};

std::vector<std::string> good_payloads(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i)
    out.push_back(R"({"kind": "good", "title": "video )" + std::to_string(i) + R"("})");
  return out;
}

} // namespace

TEST_CASE_METHOD(chaos_fixture, "three workers finish every video while one of them is "
                                "killed with SIGKILL every few seconds",
                 "[chaos][db]") {
  auto cfg = config(pipeline_stages(3));
  enqueue(cfg, good_payloads(300), 6);
  std::vector<std::string> args{"run", "--config", cfg, "--exit-when-idle"};
  spool_process first{args, env};
  spool_process second{args, env};
  std::vector<watched> stable{{"worker 1", &first}, {"worker 2", &second}};

  // The third worker is killed once it holds leases and has run for a
  // while (1.5-4 s, seeded), then started again, until the work is done.
  std::mt19937 rng{8};
  std::uniform_real_distribution<double> dwell_s{1.5, 4};
  std::unique_ptr<spool_process> victim;
  steady::time_point victim_since;
  double dwell = dwell_s(rng);
  int kills = 0;
  auto deadline = steady::now() + 300s;
  while (terminal_tasks() != total_tasks) {
    require_alive(stable, "while another worker was being killed");
    if (steady::now() > deadline)
      FAIL("the work was not done within 300 s (" << kills << " kills)\n" << report(stable));
    if (victim && !victim->running()) {
      int code = victim->wait(0);
      INFO("worker 3 log tail:\n" << tail(victim->output()));
      REQUIRE(code == 0); // it may finish by itself near the end, never fail
      victim.reset();
    }
    if (!victim) {
      victim = std::make_unique<spool_process>(args, env);
      victim_since = steady::now();
    }
    auto held = count("SELECT count(*) FROM stage_runs r JOIN workers w ON w.id = r.lease_owner "
                      "WHERE r.state = 'running' AND w.pid = "
                      + std::to_string(victim->pid()));
    if (held.value_or(0) > 0
        && steady::now() - victim_since > std::chrono::duration<double>(dwell)) {
      victim->signal(SIGKILL);
      int code = victim->wait(10);
      REQUIRE((code == 128 + SIGKILL || code == 0)); // 0: it had just finished by itself
      kills += code == 128 + SIGKILL ? 1 : 0;
      victim.reset();
      dwell = dwell_s(rng);
    }
    std::this_thread::sleep_for(100ms);
  }
  // The chaos did happen: the killed worker held leases each time.
  CHECK(kills >= 3);
  std::vector<watched> all = stable;
  if (victim)
    all.push_back({"worker 3", victim.get()});
  require_clean_exits(all);
  check_end_state("true", total_tasks, pipeline_cost);
  summary("3 workers, one killed with SIGKILL every few seconds", kills, 0, 0, all);
}

TEST_CASE_METHOD(chaos_fixture, "a worker survives PostgreSQL restarts in fast and immediate "
                                "mode mid-run and finishes the work",
                 "[chaos][db]") {
  auto cfg = config(pipeline_stages(6));
  enqueue(cfg, good_payloads(200), 4);
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  std::vector<watched> workers{{"the worker", &w}};
  int restarts = 0;

  // Fast mode at 15 % of the tasks done; immediate mode once the worker has
  // finished 20 more after coming back, and at least half of them.
  int64_t at_restart = 0;
  wait_until("15 % of the tasks done", 120, workers,
             [&] { return (at_restart = terminal_tasks()) >= total_tasks * 15 / 100; });
  cluster.restart("fast");
  ++restarts;
  require_alive(workers, "during pg_ctl restart -m fast");
  wait_until("progress after pg_ctl restart -m fast", 180, workers, [&] {
    auto n = terminal_tasks();
    return n >= at_restart + 20 && n >= total_tasks / 2;
  });
  REQUIRE(terminal_tasks() < total_tasks); // work is left for the second restart
  cluster.restart("immediate");
  ++restarts;
  require_alive(workers, "during pg_ctl restart -m immediate");

  finish_pipeline_case("PostgreSQL restarted (fast, then immediate) under a worker", 0,
                       restarts, 0, workers);
}

TEST_CASE_METHOD(chaos_fixture, "a worker survives PostgreSQL frozen for 45 s mid-run and "
                                "finishes the work",
                 "[chaos][db]") {
  auto cfg = config(pipeline_stages(6));
  enqueue(cfg, good_payloads(200), 4);
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  std::vector<watched> workers{{"the worker", &w}};

  wait_until("20 % of the tasks done", 120, workers,
             [&] { return terminal_tasks() >= total_tasks / 5; });
  REQUIRE(terminal_tasks() < total_tasks);
  cluster.pause();
  // 45 s of a server that holds every connection open and answers nothing:
  // the worker must still be there at every moment of it.
  stay_alive(45s, workers, "while PostgreSQL was frozen");
  cluster.resume();
  require_alive(workers, "when PostgreSQL came back");

  finish_pipeline_case("PostgreSQL frozen (SIGSTOP) for 45 s under a worker", 0, 0, 1,
                       workers);
}

TEST_CASE_METHOD(chaos_fixture, "poisonous stage results fail their own runs, naming the rule, "
                                "and the good ones beside them complete",
                 "[chaos][db]") {
  std::string program = SPOOL_SOURCE_DIR "/tests/chaos/poison_stage.py";
  auto cfg = config(R"(
    {"name": "render", "max_concurrent": 6, "timeout_s": 60,
     "retry": {"max_retries": 1, "base_s": 0.1, "factor": 1, "jitter": 0,
               "max_snooze_s": 0.5, "max_snoozed_total_s": 1},
     "executor": {"kind": "command", "kill_grace_s": 1, "argv": ["python3", ")"
                    + program + R"("]}},
    {"name": "publish", "after": ["render"], "max_concurrent": 4,
     "executor": {"latency": {"dist": "uniform", "min_ms": 10, "max_ms": 40}}})");
  // Each poison between good tasks, so that claims and outcome batches mix
  // them.
  struct poison {
    const char* name;
    std::vector<const char*> rule; // words its error message must use
  };
  const std::vector<poison> poisons{
    // Validation names the rule; where a record still reached SQL, the
    // database's own message names the problem.
    {"huge_cost", {"cost", "numeric field overflow"}},
    {"nul", {"nul", "\\u0000", "u+0000", "unicode escape"}},
    {"big_output", {"bytes", "too large", "too big", "size", "mib"}},
    // Over max_snooze_s: fails at once, or after the total snooze cap.
    {"huge_retry_after", {"retry_after", "retry-after", "snooze", "rate limited", "rate_limited"}},
    {"negative_cost", {"cost"}},
    {"bad_utf8", {"utf-8", "utf8"}},
  };
  std::vector<std::string> payloads;
  auto good = good_payloads(36);
  for (std::size_t i = 0; i < good.size(); ++i) {
    payloads.push_back(good[i]);
    if (i % 6 == 2)
      payloads.push_back(R"({"kind": "poison", "poison": ")"
                         + std::string{poisons[i / 6].name} + R"("})");
  }
  enqueue(cfg, payloads, 2);
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  std::vector<watched> workers{{"the worker", &w}};

  wait_all_terminal(180, workers);
  require_clean_exits(workers);
  check_end_state("payload->>'kind' = 'good'", 36, "0.01");

  pg::connection c{url, 10s};
  for (auto& p : poisons) {
    auto row = c.query("SELECT state::text, coalesce(error_message, '') FROM tasks "
                       "WHERE payload->>'poison' = $1",
                       std::string{p.name});
    REQUIRE(row.rows() == 1);
    INFO("poison " << p.name << ": task " << row.str(0, 0) << ", error_message: "
                   << row.str(0, 1).substr(0, 300));
    CHECK(row.str(0, 0) == "failed");
    CHECK(mentions(row.str(0, 1), p.rule));
  }
  // Errors are logged as lines, not echoed whole: no 2 MB output, no page of
  // SQL per failed batch.
  auto [lines, longest] = line_stats(w.output());
  INFO("log: " << lines << " lines, longest " << longest << " bytes\n" << tail(w.output()));
  CHECK(longest <= 64 * 1024);
  CHECK(w.output().size() <= 1024 * 1024);
  summary("poisonous results beside good ones in one worker", 0, 0, 0, workers);
}

TEST_CASE_METHOD(chaos_fixture, "a worker told to drain while PostgreSQL is frozen exits within "
                                "its grace, and another finishes its work",
                 "[chaos][db]") {
  auto cfg = config(pipeline_stages(6));
  enqueue(cfg, good_payloads(60), 4);
  spool_process first{{"run", "--config", cfg}, env};
  std::vector<watched> workers{{"the first worker", &first}};
  wait_until("10 % of the tasks done", 120, workers,
             [&] { return terminal_tasks() >= total_tasks / 10; });
  REQUIRE(terminal_tasks() < total_tasks);
  cluster.pause();
  std::this_thread::sleep_for(1s); // calls now hang in flight
  first.signal(SIGTERM);
  // Its grace (1 s), the stage programs' kill grace (1 s) and a margin pass
  // long before the server comes back: the drain must not wait for it.
  int code = first.wait(30);
  bool still_frozen = cluster.paused();
  cluster.resume();
  INFO("first worker log tail:\n" << tail(first.output()));
  REQUIRE(code != -1);
  CHECK(still_frozen);
  CHECK(code == 1); // not a clean drain: outcomes were left unrecorded
  CHECK_THAT(first.output(), Catch::Contains("drain deadline passed"));

  // What it held comes back through the rescue; a second worker finishes.
  spool_process second{{"run", "--config", cfg, "--exit-when-idle"}, env};
  std::vector<watched> rest{{"the second worker", &second}};
  finish_pipeline_case("SIGTERM while PostgreSQL was frozen, then a second worker", 0, 0, 1,
                       rest);
}

TEST_CASE_METHOD(chaos_fixture, "a worker started while PostgreSQL does not answer registers "
                                "and works once it is back",
                 "[chaos][db]") {
  auto cfg = config(pipeline_stages(6));
  enqueue(cfg, good_payloads(40), 4);
  cluster.pause();
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  std::vector<watched> workers{{"the worker", &w}};
  stay_alive(15s, workers, "while PostgreSQL was frozen");
  cluster.resume();
  finish_pipeline_case("a worker started while PostgreSQL was frozen", 0, 0, 1, workers);
  CHECK(count("SELECT count(*) FROM workers WHERE array_length(stages, 1) = 5") == 1);
}
