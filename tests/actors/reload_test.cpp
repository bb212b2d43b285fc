// Live reconfiguration of running workers: pools grow and shrink under
// load, running jobs keep the settings they started with, and every way a
// change arrives (file watch, SIGHUP, `spool config push`) applies it.

#include "runtime/config/config.hpp"
#include "tests/support/worker_fixture.hpp"

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>

using namespace spool;
using namespace spool::test;

namespace {

/// Replaces the file's content the way most editors save: a new file
/// renamed over the old one.
void save_by_rename(const std::string& path, const std::string& text) {
  auto tmp = path + ".tmp";
  {
    std::ofstream out{tmp, std::ios::trunc};
    out << text;
  }
  std::filesystem::rename(tmp, path);
}

/// Rewrites the file in place.
void save_in_place(const std::string& path, const std::string& text) {
  std::ofstream out{path, std::ios::trunc};
  out << text;
}

std::string version_of(const std::string& text) {
  auto res = config::parse(text);
  REQUIRE(res.ok());
  return res.config->version;
}

/// Worker settings for these tests (short intervals) and the given stages.
std::string config_text(const std::string& stages, const std::string& worker_extra = "") {
  return R"({"worker": {"idle_poll_s": 0.2, "heartbeat_interval_s": 0.5,
    "rescue_interval_s": 0.5, "shutdown_grace_s": 5, "lease_s": 5)"
         + worker_extra + R"(}, "stages": [)" + stages + "]}";
}

std::string sim_stage(const std::string& name, int max_concurrent, int latency_ms,
                      const std::string& extra = "") {
  return R"({"name": ")" + name + R"(", "max_concurrent": )" + std::to_string(max_concurrent)
         + R"(, "executor": {"latency": {"dist": "fixed", "ms": )" + std::to_string(latency_ms)
         + "}}" + extra + "}";
}

struct reload_fixture : worker_fixture {
  /// Waits until `n` workers run configuration `version`.
  bool applied(const std::string& version, int n = 1, double timeout_s = 30) {
    return eventually(
      [&] {
        return conn.query("SELECT count(*) FROM workers WHERE config_version = $1", version)
                 .i64(0, 0)
               >= n;
      },
      timeout_s);
  }

  /// When the (only) worker applied its current configuration, as epoch
  /// seconds.
  double applied_at() {
    return conn.exec("SELECT extract(epoch FROM config_applied_at)::float8 FROM workers")
      .f64(0, 0);
  }

  /// For each attempt of `stage` started at or after `since` (epoch s):
  /// true when, at its start, no more attempts ran than max(limit, those
  /// still running from before `since`). Released attempts (claims handed
  /// straight back) never ran and are left out.
  bool bound_held_after(const std::string& stage, double since, int limit) {
    auto res = conn.query(
      "WITH a AS (SELECT started_at, coalesce(finished_at, 'infinity') AS finished_at "
      "             FROM stage_attempts "
      "            WHERE stage = $1 AND outcome IS DISTINCT FROM 'released'), "
      "s AS (SELECT started_at AS t FROM a WHERE started_at >= to_timestamp($2)) "
      "SELECT count(*) FROM s WHERE "
      "  (SELECT count(*) FROM a WHERE a.started_at <= s.t AND a.finished_at > s.t) > "
      "  greatest($3, (SELECT count(*) FROM a WHERE a.started_at < to_timestamp($2) "
      "                  AND a.finished_at > s.t))",
      stage, since, limit);
    auto violations = res.i64(0, 0);
    UNSCOPED_INFO("attempts of " << stage << " that started over the bound: " << violations);
    return violations == 0;
  }
};

} // namespace

TEST_CASE_METHOD(reload_fixture, "a pool grows and shrinks under load without killing jobs",
                 "[db][worker][reload]") {
  auto path = temp_file(config_text(sim_stage("a", 2, 300)));
  enqueue(path, 120, 4);
  spool_process w{{"run", "--config", path, "--exit-when-idle"}, env};
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE state = 'done'", 10));

  auto grown = config_text(sim_stage("a", 8, 300));
  save_by_rename(path, grown);
  REQUIRE(applied(version_of(grown)));
  auto grew_at = applied_at();
  // Grows at once: 8 at a time soon after.
  CHECK(eventually([&] { return max_overlap("a") >= 6; }, 30));

  auto shrunk = config_text(sim_stage("a", 1, 300));
  save_in_place(path, shrunk);
  REQUIRE(applied(version_of(shrunk)));
  auto shrank_at = applied_at();
  CHECK(shrank_at > grew_at);

  REQUIRE(w.wait(180) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 120);
  // Never more than the limit of the moment, or the jobs still running
  // from before it.
  CHECK(max_overlap("a") <= 8);
  CHECK(bound_held_after("a", shrank_at, 1));
  // No job was cut short: every attempt that ran succeeded.
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE outcome NOT IN ('ok', 'released')")
        == 0);
  CHECK_THAT(w.output(), Catch::Contains("configuration_reloaded (file change)"));
  CHECK_THAT(w.output(), Catch::Contains("stages[a].max_concurrent 2 -> 8"));
  CHECK_THAT(w.output(), Catch::Contains("stages[a].max_concurrent 8 -> 1"));
  std::remove(path.c_str());
}

TEST_CASE_METHOD(reload_fixture, "running jobs keep the timeout they started with",
                 "[db][worker][reload]") {
  // 1.5 s jobs under a 20 s timeout; the reload cuts it to 0.5 s.
  auto stage = [](double timeout_s) {
    return sim_stage("a", 2, 1500,
                     R"(, "timeout_s": )" + std::to_string(timeout_s)
                       + R"(, "retry": {"max_retries": 0})");
  };
  auto path = temp_file(config_text(stage(20)));
  enqueue(path, 4, 1);
  spool_process w{{"run", "--config", path, "--exit-when-idle"}, env};
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE state = 'running'", 2));
  auto strict = config_text(stage(0.5));
  save_by_rename(path, strict);
  REQUIRE(applied(version_of(strict)));
  REQUIRE(w.wait(120) == 0);
  // The two that ran during the reload finished; the two claimed after it
  // timed out under the new limit.
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE outcome = 'ok'") == 2);
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE error_class = 'timeout'") == 2);
  std::remove(path.c_str());
}

TEST_CASE_METHOD(reload_fixture, "running jobs keep the retry policy they started with",
                 "[db][worker][reload]") {
  // Every call fails after 2 s. Backoff 0.05 s at first, 600 s after the
  // reload.
  auto stage_text = [](double base_s) {
    return R"({"name": "a", "max_concurrent": 1, "retry": {"max_retries": 5, "jitter": 0,
      "base_s": )" + std::to_string(base_s) + R"(}, "executor": {"latency": {"dist": "fixed",
      "ms": 2000}, "errors": {"transient": 1}}})";
  };
  auto path = temp_file(config_text(stage_text(0.05)));
  enqueue(path, 1, 1);
  spool_process w{{"run", "--config", path}, env};
  // The second attempt is running.
  REQUIRE(wait_for("SELECT count(*) FROM stage_attempts WHERE attempt = 2 AND outcome IS NULL",
                   1));
  auto slow = config_text(stage_text(600));
  save_by_rename(path, slow);
  REQUIRE(applied(version_of(slow)));
  REQUIRE(scalar("SELECT count(*) FROM stage_attempts WHERE attempt = 2 AND outcome IS NULL")
          == 1);
  // Attempt 2 started under the old policy: its retry follows at once.
  // Attempt 3 started under the new one: its retry waits 600 s or more.
  REQUIRE(wait_for("SELECT count(*) FROM stage_attempts WHERE attempt = 3 AND outcome = 'retry'",
                   1));
  CHECK(scalar("SELECT count(*) FROM stage_attempts a JOIN stage_attempts b "
               "ON b.stage_run_id = a.stage_run_id AND b.attempt = 3 "
               "WHERE a.attempt = 2 AND b.started_at - a.finished_at < interval '5 seconds'")
        == 1);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'scheduled' "
               "AND ready_at > now() + interval '500 seconds'")
        == 1);
  CHECK(scalar("SELECT count(*) FROM stage_attempts") == 3);
  w.signal(SIGTERM);
  CHECK(w.wait(60) == 0);
  std::remove(path.c_str());
}

TEST_CASE_METHOD(reload_fixture, "an invalid file is refused and the old configuration stays",
                 "[db][worker][reload]") {
  auto good = config_text(sim_stage("a", 2, 10));
  auto path = temp_file(good);
  spool_process w{{"run", "--config", path}, env};
  REQUIRE(applied(version_of(good)));
  save_by_rename(path, config_text(sim_stage("a", 0, 10), R"(, "lease_s": -1)"));
  REQUIRE(eventually([&] { return w.output().find("configuration_refused") != std::string::npos; },
                     30));
  auto out = w.output();
  CHECK_THAT(out, Catch::Contains("stages[0].max_concurrent: must be"));
  CHECK_THAT(out, Catch::Contains("worker.lease_s: must be"));
  CHECK(text("SELECT config_version FROM workers") == version_of(good));
  // Still working under the old configuration.
  auto good_path = temp_file(good);
  enqueue(good_path, 5, 1);
  CHECK(wait_for("SELECT count(*) FROM tasks WHERE state = 'completed'", 5));
  w.signal(SIGTERM);
  CHECK(w.wait(60) == 0);
  std::remove(path.c_str());
  std::remove(good_path.c_str());
}

TEST_CASE_METHOD(reload_fixture, "SIGHUP re-reads the configuration file",
                 "[db][worker][reload]") {
  auto first = config_text(sim_stage("a", 2, 10));
  auto path = temp_file(first);
  spool_process w{{"run", "--config", path, "--no-watch"}, env};
  REQUIRE(applied(version_of(first)));
  auto second = config_text(sim_stage("a", 3, 10));
  save_in_place(path, second);
  // Without the watch, nothing happens until the signal.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  CHECK(text("SELECT config_version FROM workers") == version_of(first));
  w.signal(SIGHUP);
  CHECK(applied(version_of(second)));
  CHECK_THAT(w.output(), Catch::Contains("configuration_reloaded (SIGHUP)"));
  w.signal(SIGTERM);
  CHECK(w.wait(60) == 0);
  std::remove(path.c_str());
}

TEST_CASE_METHOD(reload_fixture, "a restart-only change is reported and kept, the rest applies",
                 "[db][worker][reload]") {
  auto first = config_text(sim_stage("a", 2, 10));
  auto path = temp_file(first);
  spool_process w{{"run", "--config", path}, env};
  REQUIRE(applied(version_of(first)));
  auto second = config_text(sim_stage("a", 4, 10), R"(, "db_statement_timeout_s": 12)");
  save_by_rename(path, second);
  REQUIRE(applied(version_of(second)));
  CHECK(text("SELECT array_to_string(config_restart_pending, ',') FROM workers")
        == "worker.db_statement_timeout_s");
  auto out = w.output();
  CHECK_THAT(out, Catch::Contains("configuration_restart_required (file change): "
                                  "worker.db_statement_timeout_s"));
  CHECK_THAT(out, Catch::Contains("stages[a].max_concurrent 2 -> 4"));
  CHECK_THAT(out, !Catch::Contains("worker.db_statement_timeout_s 30 -> 12"));
  w.signal(SIGTERM);
  CHECK(w.wait(60) == 0);
  std::remove(path.c_str());
}

TEST_CASE_METHOD(reload_fixture, "a stage added live gets a pool; a removed one drains",
                 "[db][worker][reload]") {
  // Tasks of a two-stage pipeline (a and b side by side); the worker serves
  // only a at first.
  auto both = config_text(sim_stage("a", 2, 1500) + "," + sim_stage("b", 2, 10));
  auto both_path = temp_file(both);
  enqueue(both_path, 6, 1);
  auto only_a = config_text(sim_stage("a", 2, 1500));
  auto path = temp_file(only_a);
  spool_process w{{"run", "--config", path}, env};
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE stage = 'a' AND state = 'done'", 1));
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE stage = 'b'") == 0);

  save_by_rename(path, both);
  REQUIRE(applied(version_of(both)));
  CHECK(wait_for("SELECT count(*) FROM stage_runs WHERE stage = 'b' AND state = 'done'", 6));

  // Remove a while two of its jobs run: they finish, no new one starts.
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE stage = 'a' AND state = 'running'", 2));
  auto only_b = config_text(sim_stage("b", 2, 10));
  save_by_rename(path, only_b);
  REQUIRE(applied(version_of(only_b)));
  auto removed_at = applied_at();
  CHECK(eventually(
    [&] { return scalar("SELECT count(*) FROM stage_runs WHERE stage = 'a' AND state = 'running'") == 0; },
    30));
  CHECK(scalar("SELECT count(*) FROM stage_attempts WHERE stage = 'a' AND outcome <> 'ok'")
        == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  CHECK(conn.query("SELECT count(*) FROM stage_attempts WHERE stage = 'a' "
                   "AND started_at > to_timestamp($1)",
                   removed_at)
          .i64(0, 0)
        == 0);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE stage = 'a' AND state = 'ready'") > 0);
  CHECK_THAT(w.output(), Catch::Contains("stage a left the configuration"));
  w.signal(SIGTERM);
  CHECK(w.wait(60) == 0);
  std::remove(path.c_str());
  std::remove(both_path.c_str());
}

TEST_CASE_METHOD(reload_fixture, "three workers all apply one push", "[db][worker][reload]") {
  auto first = config_text(sim_stage("a", 2, 10));
  auto first_path = temp_file(first);
  REQUIRE(run_spool({"config", "push", first_path}, env).exit_code == 0);
  std::vector<std::unique_ptr<spool_process>> workers;
  for (int i = 0; i < 3; ++i)
    workers.push_back(std::make_unique<spool_process>(
      std::vector<std::string>{"run", "--config", "db"}, env));
  REQUIRE(applied(version_of(first), 3));

  auto second = config_text(sim_stage("a", 5, 10));
  auto second_path = temp_file(second);
  auto pushed = run_spool({"config", "push", second_path}, env);
  REQUIRE(pushed.exit_code == 0);
  CHECK(applied(version_of(second), 3));
  CHECK(scalar("SELECT count(*) FROM workers WHERE config_stored_version = 2") == 3);

  // An invalid push is refused before it is stored; the workers keep theirs.
  auto bad_path = temp_file(config_text(sim_stage("a", -3, 10)));
  auto bad = run_spool({"config", "push", bad_path}, env);
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.out + bad.err, Catch::Contains("stages[0].max_concurrent"));
  CHECK(scalar("SELECT count(*) FROM spool_config_versions") == 2);
  CHECK(scalar("SELECT count(*) FROM workers WHERE config_stored_version = 2") == 3);

  // A stored version this binary refuses (written around the CLI) is
  // refused by every worker, which keeps the one in force.
  conn.query("INSERT INTO spool_config_versions (checksum, content, pushed_by) "
             "VALUES ('0000000000000000', $1, 'test')",
             std::string{R"({"stages": [{"name": "a", "max_concurrent": 0}]})"});
  conn.exec("NOTIFY spool_config, '3'");
  CHECK(eventually(
    [&] {
      for (auto& w : workers)
        if (w->output().find("configuration_refused") == std::string::npos)
          return false;
      return true;
    },
    30));
  CHECK(scalar("SELECT count(*) FROM workers WHERE config_stored_version = 2") == 3);

  for (auto& w : workers)
    w->signal(SIGTERM);
  for (auto& w : workers)
    CHECK(w->wait(60) == 0);
  for (auto* p : {&first_path, &second_path, &bad_path})
    std::remove(p->c_str());
}

TEST_CASE_METHOD(reload_fixture, "SIGHUP makes a database-configured worker look for a new version",
                 "[db][worker][reload]") {
  auto first = config_text(sim_stage("a", 2, 10));
  auto first_path = temp_file(first);
  REQUIRE(run_spool({"config", "push", first_path}, env).exit_code == 0);
  spool_process w{{"run", "--config", "db"}, env};
  REQUIRE(applied(version_of(first)));
  // Its listener connects (and looks for a newer version once) meanwhile.
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  // A version stored without its NOTIFY (as if the notification was lost).
  auto second = config_text(sim_stage("a", 3, 10));
  conn.query("INSERT INTO spool_config_versions (checksum, content, pushed_by) "
             "VALUES ($1, $2, 'test')",
             version_of(second), second);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  CHECK(text("SELECT config_version FROM workers") == version_of(first));
  w.signal(SIGHUP);
  CHECK(applied(version_of(second)));
  w.signal(SIGTERM);
  CHECK(w.wait(60) == 0);
  std::remove(first_path.c_str());
}

TEST_CASE_METHOD(reload_fixture,
                 "a change valid only with new restart-only values is refused whole",
                 "[db][worker][reload]") {
  auto first = config_text(sim_stage("a", 2, 10));
  auto path = temp_file(first);
  spool_process w{{"run", "--config", path}, env};
  REQUIRE(applied(version_of(first)));
  // Valid on its own, but the running statement timeout (30 s, restart
  // only) would then exceed the new live call deadline.
  auto second = config_text(sim_stage("a", 4, 10),
                            R"(, "db_statement_timeout_s": 5, "db_call_timeout_s": 10)");
  save_by_rename(path, second);
  REQUIRE(eventually(
    [&] { return w.output().find("configuration_refused") != std::string::npos; }, 30));
  CHECK_THAT(w.output(), Catch::Contains("worker.db_call_timeout_s: must be >"));
  CHECK(text("SELECT config_version FROM workers") == version_of(first));
  w.signal(SIGTERM);
  CHECK(w.wait(60) == 0);
  std::remove(path.c_str());
}
