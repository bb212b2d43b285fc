// Configuration versions stored in the database: runtime/store/config_store
// and `spool config push|history|show|rollback`, `--config db`, and the
// configurations workers run in `spool status`.

#include "runtime/config/config.hpp"
#include "runtime/pg/connection.hpp"
#include "runtime/store/config_store.hpp"
#include "runtime/store/store.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/test_db.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace spool;
using test::run_spool;
using namespace std::chrono_literals;

namespace {

/// A small valid configuration whose only stage is `stage` (the name makes
/// configurations differ).
std::string config_text(const std::string& stage, const std::string& extra = {}) {
  return "{\n  // a comment the store keeps\n  " + extra + "\"stages\": [{\"name\": \"" + stage
         + "\", \"executor\": {\"kind\": \"simulate\"}}],\n}\n";
}

/// The checksum `spool config push` stores for `text`.
std::string checksum_of(const std::string& text) {
  auto res = config::parse(text);
  REQUIRE(res.ok());
  return res.config->version;
}

/// A config file that is removed with the test.
struct config_file {
  std::string path;
  explicit config_file(const std::string& text) : path{test::temp_file(text)} {}
  ~config_file() { std::filesystem::remove(path); }
};

/// A database and the environment that points spool at it.
struct setup {
  test::fresh_database db;
  std::map<std::string, std::string> env{{"SPOOL_DATABASE_URL", db.url()}};
  pg::connection conn{db.url()};

  int64_t scalar(const std::string& sql) { return conn.exec(sql).i64(0, 0); }

  /// Pushes `text` through the CLI; requires success.
  test::cli_result push(const std::string& text, const std::string& note = {}) {
    config_file f{text};
    std::vector<std::string> args{"config", "push", f.path};
    if (!note.empty())
      args.insert(args.end(), {"--note", note});
    auto res = run_spool(args, env);
    INFO(res.err);
    REQUIRE(res.exit_code == 0);
    return res;
  }
};

/// Notifications on `c` within `timeout` (stops at the first batch).
std::vector<pg::connection::notification> notifications(pg::connection& c,
                                                        std::chrono::milliseconds timeout) {
  auto got = c.drain_notifications();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (got.empty() && std::chrono::steady_clock::now() < deadline) {
    c.wait_readable(50ms);
    got = c.drain_notifications();
  }
  return got;
}

/// The lines of `text` that contain `needle`.
std::vector<std::string> lines_with(const std::string& text, const std::string& needle) {
  std::vector<std::string> out;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos)
      out.push_back(line);
  return out;
}

} // namespace

// -- push ----------------------------------------------------------------------------

TEST_CASE("a valid push is stored as version 1 with its checksum and notifies spool_config",
          "[config_versions][db][cli]") {
  setup s;
  pg::connection listener{s.db.url()};
  listener.listen("spool_config");
  auto text = config_text("render");

  auto res = s.push(text, "first one");
  CHECK(res.out == "pushed version 1 (checksum " + checksum_of(text) + "): first one\n");

  auto row = s.conn.exec("SELECT version, checksum, content, pushed_by, note "
                         "FROM spool_config_versions");
  REQUIRE(row.rows() == 1);
  CHECK(row.i64(0, 0) == 1);
  CHECK(row.str(0, 1) == checksum_of(text));
  CHECK(row.str(0, 2) == text); // comments kept
  CHECK_THAT(row.str(0, 3), Catch::Contains("@"));
  CHECK(row.str(0, 4) == "first one");

  auto got = notifications(listener, 10s);
  REQUIRE(got.size() == 1);
  CHECK(got[0].channel == "spool_config");
  CHECK(got[0].payload == "1");
}

TEST_CASE("an invalid push lists every problem and stores and notifies nothing",
          "[config_versions][db][cli]") {
  setup s;
  pg::connection listener{s.db.url()};
  listener.listen("spool_config");
  config_file bad{R"({"worker": {"lease_s": 0},
    "stages": [{"name": "a", "after": ["ghost"]}, {"name": "b", "colour": 1}]})"};

  auto res = run_spool({"config", "push", bad.path}, s.env);
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains("nothing was stored"));
  CHECK_THAT(res.err, Catch::Contains("worker.lease_s: "));
  CHECK_THAT(res.err, Catch::Contains("stages[0].after[0]: ") && Catch::Contains("ghost"));
  CHECK_THAT(res.err, Catch::Contains("stages[1].colour: unknown key"));
  CHECK(res.out.empty());
  CHECK(s.scalar("SELECT count(*) FROM spool_config_versions") == 0);
  CHECK(notifications(listener, 300ms).empty());

  auto missing = run_spool({"config", "push", "/nonexistent/spool.json"}, s.env);
  CHECK(missing.exit_code == 2);
  CHECK_THAT(missing.err, Catch::Contains("FILE: /nonexistent/spool.json does not exist"));

  config_file latin1{"{ // caf\xe9\n \"stages\": [{\"name\": \"a\"}]}"};
  auto not_utf8 = run_spool({"config", "push", latin1.path}, s.env);
  CHECK(not_utf8.exit_code == 2);
  CHECK_THAT(not_utf8.err, Catch::Contains("not valid UTF-8 at byte 8"));

  config_file huge{"{\"stages\": [{\"name\": \"a\"}]}" + std::string(1 << 20, ' ')};
  auto too_big = run_spool({"config", "push", huge.path}, s.env);
  CHECK(too_big.exit_code == 2);
  CHECK_THAT(too_big.err, Catch::Contains("a stored configuration holds at most 1048576"));

  config_file fine{config_text("a")};
  auto bad_note = run_spool({"config", "push", fine.path, "--note", "two\nlines"}, s.env);
  CHECK(bad_note.exit_code == 2);
  CHECK_THAT(bad_note.err, Catch::Contains("--note: must be one line"));
  CHECK(s.scalar("SELECT count(*) FROM spool_config_versions") == 0);
}

TEST_CASE("a pushed configuration may not name the database", "[config_versions][db][cli]") {
  setup s;
  const std::string refusal =
    "database_url: not allowed in a pushed configuration; workers connect before they read it "
    "(use SPOOL_DATABASE_URL or --database-url)";
  config_file with_url{config_text("a", "\"database_url\": \"postgresql://elsewhere/db\", ")};
  auto res = run_spool({"config", "push", with_url.path}, s.env);
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains(refusal));

  // Listed with the other problems of an invalid file, too.
  config_file also_bad{R"({"database_url": "postgresql://x/y", "stages": [{"name": "a",
                          "max_concurrent": 0}]})"};
  auto both = run_spool({"config", "push", also_bad.path}, s.env);
  CHECK(both.exit_code == 2);
  CHECK_THAT(both.err, Catch::Contains(refusal) && Catch::Contains("stages[0].max_concurrent"));
  CHECK(s.scalar("SELECT count(*) FROM spool_config_versions") == 0);

  // An empty database_url is the default, not a URL.
  s.push(config_text("a", "\"database_url\": \"\", "));
  CHECK(s.scalar("SELECT count(*) FROM spool_config_versions") == 1);
}

TEST_CASE("pushing the configuration already newest stores nothing",
          "[config_versions][db][cli]") {
  setup s;
  auto text = config_text("render");
  s.push(text);
  pg::connection listener{s.db.url()};
  listener.listen("spool_config");

  // The same configuration written differently has the same checksum.
  auto same = "/* reformatted */ {\"stages\":[{\"executor\":{\"kind\":\"simulate\"},"
              "\"name\":\"render\"}]}";
  auto res = s.push(same);
  CHECK(res.out == "unchanged: version 1 has checksum " + checksum_of(text)
                     + "; nothing stored\n");
  CHECK(s.scalar("SELECT count(*) FROM spool_config_versions") == 1);
  CHECK(notifications(listener, 300ms).empty());

  // A different one in between makes the old one new again.
  s.push(config_text("other"));
  CHECK_THAT(s.push(text).out, Catch::StartsWith("pushed version 3 "));
}

TEST_CASE("concurrent pushes of one configuration store it once", "[config_versions][db]") {
  test::fresh_database db;
  auto text = config_text("render");
  auto sum = checksum_of(text);
  for (int round = 0; round < 5; ++round) {
    auto push = [&] {
      pg::connection c{db.url()};
      return store::push_config_if_changed(c, text, sum, "test@host", "");
    };
    auto a = std::async(std::launch::async, push);
    auto b = std::async(std::launch::async, push);
    auto x = a.get();
    auto y = b.get();
    CHECK(x.version == y.version);
    CHECK(int{x.created} + int{y.created} == (round == 0 ? 1 : 0));
  }
  pg::connection c{db.url()};
  CHECK(c.exec("SELECT count(*) FROM spool_config_versions").i64(0, 0) == 1);
}

// -- history, show, rollback --------------------------------------------------------

TEST_CASE("history lists stored versions newest first", "[config_versions][db][cli]") {
  setup s;
  auto empty = run_spool({"config", "history"}, s.env);
  CHECK(empty.exit_code == 0);
  CHECK(empty.out == "no configuration stored; push one with `spool config push FILE`\n");

  s.push(config_text("a"), "one");
  s.push(config_text("b"), "two");
  s.push(config_text("c"), "three");
  auto res = run_spool({"config", "history"}, s.env);
  REQUIRE(res.exit_code == 0);
  std::istringstream in{res.out};
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  REQUIRE(lines.size() == 4);
  CHECK_THAT(lines[0], Catch::StartsWith("version  checksum")
                         && Catch::Contains("pushed_at") && Catch::Contains("pushed_by")
                         && Catch::EndsWith("note"));
  CHECK_THAT(lines[1], Catch::StartsWith("      3  " + checksum_of(config_text("c")))
                         && Catch::EndsWith("three"));
  CHECK_THAT(lines[2], Catch::StartsWith("      2  ") && Catch::EndsWith("two"));
  CHECK_THAT(lines[3], Catch::StartsWith("      1  ") && Catch::EndsWith("one"));

  auto two = run_spool({"config", "history", "--limit", "2"}, s.env);
  CHECK(lines_with(two.out, "  ").size() == 3); // header and versions 3, 2
  CHECK(lines_with(two.out, "one").empty());
  auto zero = run_spool({"config", "history", "--limit", "0"}, s.env);
  CHECK(zero.exit_code == 2);
  CHECK_THAT(zero.err, Catch::Contains("--limit: must be 1..1000, got 0"));

  auto rows = store::config_history(s.conn, 10);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].version == 3);
  CHECK(rows[2].note == "one");
  CHECK(rows[0].pushed_at.size() == 20); // 2026-12-02T00:22:35Z
  CHECK(rows[0].pushed_at.back() == 'Z');
}

TEST_CASE("show prints the newest or a named version as pushed, and refuses an unknown one",
          "[config_versions][db][cli]") {
  setup s;
  auto none = run_spool({"config", "show"}, s.env);
  CHECK(none.exit_code == 2);
  CHECK_THAT(none.err, Catch::Contains("no configuration stored; push one with "
                                       "`spool config push FILE`"));

  auto first = config_text("a");
  auto second = config_text("b");
  s.push(first);
  s.push(second);
  auto latest = run_spool({"config", "show"}, s.env);
  CHECK(latest.exit_code == 0);
  CHECK(latest.out == second);
  auto one = run_spool({"config", "show", "1"}, s.env);
  CHECK(one.exit_code == 0);
  CHECK(one.out == first);
  auto unknown = run_spool({"config", "show", "9"}, s.env);
  CHECK(unknown.exit_code == 2);
  CHECK_THAT(unknown.err,
             Catch::Contains("VERSION: no stored configuration version 9 (the newest is 2)"));
  CHECK(unknown.out.empty());
}

TEST_CASE("rollback stores an earlier version's content as a new version and notifies",
          "[config_versions][db][cli]") {
  setup s;
  auto first = config_text("a");
  s.push(first);
  s.push(config_text("b"));
  pg::connection listener{s.db.url()};
  listener.listen("spool_config");

  auto res = run_spool({"config", "rollback", "1"}, s.env);
  INFO(res.err);
  REQUIRE(res.exit_code == 0);
  CHECK(res.out == "pushed version 3 (checksum " + checksum_of(first) + "): rollback to 1\n");
  auto v3 = store::config_at(s.conn, 3);
  REQUIRE(v3);
  CHECK(v3->content == first);
  CHECK(v3->checksum == checksum_of(first));
  CHECK(v3->note == "rollback to 1");
  auto got = notifications(listener, 10s);
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "3");

  // Back to what is already newest: nothing to do.
  auto again = run_spool({"config", "rollback", "1"}, s.env);
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.out, Catch::StartsWith("unchanged: version 3 "));

  auto unknown = run_spool({"config", "rollback", "42"}, s.env);
  CHECK(unknown.exit_code == 2);
  CHECK_THAT(unknown.err,
             Catch::Contains("VERSION: no stored configuration version 42 (the newest is 3)"));
  CHECK(s.scalar("SELECT count(*) FROM spool_config_versions") == 3);
}

TEST_CASE("a stored version this binary finds invalid is neither rolled back to nor run",
          "[config_versions][db][cli]") {
  setup s;
  s.push(config_text("a"));
  // As if pushed by another spool version that knew a property this one
  // does not.
  store::push_config(s.conn, config_text("b", "\"future_key\": 1, "), "0123456789abcdef",
                     "someone@elsewhere", "");

  auto res = run_spool({"config", "rollback", "2"}, s.env);
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains("version 2 is not valid")
                        && Catch::Contains("future_key: unknown key"));
  CHECK(s.scalar("SELECT count(*) FROM spool_config_versions") == 2);

  auto enq = run_spool({"enqueue", "--config", "db", "--channel", "UC1"}, s.env);
  CHECK(enq.exit_code == 2);
  CHECK_THAT(enq.err, Catch::Contains("--config db: stored configuration version 2 is not valid")
                        && Catch::Contains("future_key: unknown key"));
  CHECK(s.scalar("SELECT count(*) FROM tasks") == 0);
}

// -- --config db ---------------------------------------------------------------------

TEST_CASE("enqueue --config db uses the newest stored pipeline", "[config_versions][db][cli]") {
  setup s;
  auto none = run_spool({"enqueue", "--config", "db", "--channel", "UC1"}, s.env);
  CHECK(none.exit_code == 2);
  CHECK_THAT(none.err, Catch::Contains("--config db: no configuration stored; push one with "
                                       "`spool config push FILE`"));
  auto run = run_spool({"run", "--config", "db", "--exit-when-idle"}, s.env);
  CHECK(run.exit_code == 2);
  CHECK_THAT(run.err, Catch::Contains("no configuration stored"));

  s.push(config_text("a"));
  s.push(R"({"stages": [{"name": "fetch", "executor": {"kind": "simulate"}},
                        {"name": "cut", "after": ["fetch"], "executor": {"kind": "simulate"}}]})");
  auto res = run_spool({"enqueue", "--config", "db", "--channel", "UC1"}, s.env);
  INFO(res.err);
  REQUIRE(res.exit_code == 0);
  auto stages = s.conn.exec("SELECT string_agg(stage, ',' ORDER BY stage) FROM stage_runs");
  CHECK(stages.str(0, 0) == "cut,fetch");
}

// -- what workers run -------------------------------------------------------------------

TEST_CASE("spool status shows each worker's configuration and flags different ones",
          "[config_versions][db][cli]") {
  setup s;
  store::store q{s.conn};
  auto a = checksum_of(config_text("a"));
  auto b = checksum_of(config_text("b"));
  for (auto id : {"worker-one", "worker-two", "worker-odd"})
    q.register_worker({id, "host", 100, "0000000000000000", {"a"}, std::chrono::minutes{10}});
  int64_t applied_us = 1'764'633'600'123'456; // 2025-12-02T00:00:00.123456Z
  store::record_applied_config(s.conn, "worker-one", a, 7, applied_us, {});
  store::record_applied_config(s.conn, "worker-two", a, 0, applied_us,
                               {"data_dir", "worker.lease_s"});
  store::record_applied_config(s.conn, "worker-odd", b, 8, applied_us, {});
  CHECK_THROWS_WITH(store::record_applied_config(s.conn, "nobody", a, 1, applied_us, {}),
                    Catch::Contains("no worker 'nobody'"));

  auto row = s.conn.exec(
    "SELECT config_version, config_stored_version, "
    "(extract(epoch FROM config_applied_at) * 1000000)::bigint, "
    "array_to_string(config_restart_pending, ',') FROM workers WHERE id = 'worker-two'");
  CHECK(row.str(0, 0) == a);
  CHECK(row.is_null(0, 1)); // from a file
  CHECK(row.i64(0, 2) == applied_us);
  CHECK(row.str(0, 3) == "data_dir,worker.lease_s");

  auto text = run_spool({"status"}, s.env);
  INFO(text.out);
  REQUIRE(text.exit_code == 0);
  auto one = lines_with(text.out, "worker-one");
  auto two = lines_with(text.out, "worker-two");
  auto odd = lines_with(text.out, "worker-odd");
  REQUIRE((one.size() == 1 && two.size() == 1 && odd.size() == 1));
  CHECK_THAT(one[0], Catch::Contains("config " + a + " v7  stages a"));
  CHECK_THAT(one[0], !Catch::Contains("config differs") && !Catch::Contains("restart pending"));
  CHECK_THAT(two[0], Catch::Contains("config " + a + "  stages a")
                       && Catch::Contains("restart pending: data_dir,worker.lease_s"));
  CHECK_THAT(two[0], !Catch::Contains("config differs"));
  CHECK_THAT(odd[0], Catch::Contains("config " + b + " v8")
                       && Catch::Contains("(config differs)"));
  CHECK_THAT(text.out, Catch::Contains("warning: live workers run 2 different configurations: "
                                       + a + " (2 workers), " + b
                                       + " (1 worker, marked \"config differs\")"));

  auto js = run_spool({"status", "--json"}, s.env);
  REQUIRE(js.exit_code == 0);
  auto status = boost::json::parse(js.out).as_object();
  std::map<std::string, boost::json::object> by_id;
  for (auto& w : status.at("workers").as_array())
    by_id[std::string{w.at("id").as_string()}] = w.as_object();
  CHECK(by_id.at("worker-one").at("config_stored_version") == 7);
  CHECK(by_id.at("worker-one").at("config_applied_at") == "2025-12-02T00:00:00Z");
  CHECK(by_id.at("worker-two").at("config_stored_version").is_null());
  CHECK(by_id.at("worker-two").at("config_restart_pending").as_array().size() == 2);
  CHECK(by_id.at("worker-odd").at("config_differs") == true);
  CHECK(by_id.at("worker-one").at("config_differs") == false);
  CHECK(status.at("configurations").as_array().size() == 2);

  // The odd one goes: one configuration, no warning, no marks.
  q.worker_stopped("worker-odd");
  auto after = run_spool({"status"}, s.env);
  CHECK_THAT(after.out, !Catch::Contains("different configurations")
                          && !Catch::Contains("config differs"));
}
