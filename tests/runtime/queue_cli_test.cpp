#include "runtime/pg/connection.hpp"
#include "runtime/store/task_input.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/test_db.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <unistd.h>

using namespace spool;
using test::run_spool;

TEST_CASE("a JSONL batch with bad lines is rejected whole, naming line and field", "[store]") {
  std::istringstream in{R"({"channel_id":"A","payload":{"title":"x"}}

{"channel_id":"B","priority":"urgent"}
{"channel_id":"has space"}
not json
{"channel_id":"C","payload":[1]}
{"channel_id":"D","colour":"red"}
)"};
  try {
    store::parse_tasks_jsonl(in);
    FAIL("accepted");
  } catch (const store::input_error& e) {
    REQUIRE(e.problems.size() == 5);
    CHECK(e.problems[0].line == 3);
    CHECK(e.problems[0].field == "priority");
    CHECK(e.problems[1].line == 4);
    CHECK(e.problems[1].field == "channel_id");
    CHECK(e.problems[2].line == 5);
    CHECK(e.problems[3].field == "payload");
    CHECK(e.problems[4].field == "colour");
  }
}

TEST_CASE("channel ids accept YouTube ids and handles, and nothing odd", "[store]") {
  CHECK(store::valid_channel_id("UCx9_-abc"));
  CHECK(store::valid_channel_id("@studio.one"));
  CHECK_FALSE(store::valid_channel_id(""));
  CHECK_FALSE(store::valid_channel_id("a b"));
  CHECK_FALSE(store::valid_channel_id("x'; DROP TABLE tasks;--"));
  CHECK_FALSE(store::valid_channel_id(std::string(129, 'a')));
}

TEST_CASE("enqueue, show, reprioritize and cancel through the CLI", "[cli][db][store]") {
  test::fresh_database db;
  std::map<std::string, std::string> env{{"SPOOL_DATABASE_URL", db.url()}};
  auto one = run_spool({"enqueue", "--channel", "UC1", "--priority", "high", "--payload",
                        R"({"title":"A cat"})"},
                       env);
  REQUIRE(one.exit_code == 0);
  auto id = std::stoll(one.out);

  auto batch = run_spool({"enqueue", "--file", "-"}, env,
                         "{\"channel_id\":\"A\"}\n{\"channel_id\":\"B\",\"idempotency_key\":\"k\"}\n"
                         "{\"channel_id\":\"B\",\"idempotency_key\":\"k\"}\n");
  REQUIRE(batch.exit_code == 0);
  CHECK_THAT(batch.out, Catch::Contains("(exists)"));

  auto bad = run_spool({"enqueue", "--file", "-"}, env,
                       "{\"channel_id\":\"Z\"}\n{\"channel_id\":\"Z\",\"payload\":3}\n");
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Catch::Contains("line 2") && Catch::Contains("payload"));

  pg::connection conn{db.url()};
  CHECK(conn.exec("SELECT count(*) FROM tasks").i64(0, 0) == 3); // nothing from the bad batch
  CHECK(conn.exec("SELECT count(*) FROM stage_runs").i64(0, 0) == 15);

  auto show = run_spool({"task", "show", std::to_string(id), "--json"}, env);
  REQUIRE(show.exit_code == 0);
  auto task = boost::json::parse(show.out).as_object();
  CHECK(task.at("priority") == "high");
  CHECK(task.at("payload").at("title") == "A cat");
  CHECK(task.at("stage_runs").as_array().size() == 5);

  CHECK(run_spool({"priority", std::to_string(id), "low"}, env).exit_code == 0);
  CHECK(conn.query("SELECT priority::text FROM tasks WHERE id = $1", id).str(0, 0) == "low");
  auto badprio = run_spool({"priority", std::to_string(id), "urgent"}, env);
  CHECK(badprio.exit_code == 2);
  CHECK_THAT(badprio.err, Catch::Contains("urgent"));

  CHECK(run_spool({"cancel", std::to_string(id)}, env).exit_code == 0);
  CHECK(conn.query("SELECT state::text FROM tasks WHERE id = $1", id).str(0, 0) == "cancelled");
  CHECK(run_spool({"cancel", "999999"}, env).exit_code == 1);

  auto status = run_spool({"status", "--json"}, env);
  REQUIRE(status.exit_code == 0);
  auto s = boost::json::parse(status.out).as_object();
  CHECK(s.at("stages").at("asset_gen").at("ready") == 2);
  CHECK(s.at("stages").at("asset_gen").at("cancelled") == 1);
  CHECK(s.at("tasks").at("queued") == 2);
  auto text = run_spool({"status"}, env);
  CHECK_THAT(text.out, Catch::Contains("asset_gen") && Catch::Contains("ready by channel"));
}

TEST_CASE("config check lists every problem with its path", "[cli][config]") {
  auto dir = std::filesystem::temp_directory_path() / ("spool_cfg_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto file = dir / "bad.json";
  std::ofstream{file} << R"({"stages":[{"name":"a","after":["ghost"],"max_concurrent":0},
                                 {"name":"a","colour":1}]})";
  auto res = run_spool({"config", "check", file.string()});
  std::filesystem::remove_all(dir);
  CHECK(res.exit_code == 1);
  CHECK_THAT(res.out, Catch::Contains("stages[0].after[0]") && Catch::Contains("ghost"));
  CHECK_THAT(res.out, Catch::Contains("stages[0].max_concurrent"));
  CHECK_THAT(res.out, Catch::Contains("stages[1].colour"));
  CHECK_THAT(res.out, Catch::Contains("duplicate"));
  auto ok = run_spool({"config", "check", "config/spool.json"});
  CHECK(ok.exit_code == 0);
}

// -- bad input never reaches PostgreSQL ---------------------------------------------

namespace {

/// An environment whose database cannot be reached: a command that gets
/// past input validation fails with exit 1, so exit 2 proves it stopped at
/// the input.
const std::map<std::string, std::string> no_database{
  {"SPOOL_DATABASE_URL", "postgresql://127.0.0.1:1/unreachable"}};

test::cli_result enqueue_lines(const std::string& lines,
                               const std::map<std::string, std::string>& env = no_database) {
  return run_spool({"enqueue", "--file", "-"}, env, lines);
}

} // namespace

TEST_CASE("an estimated_cost beyond 1000000 is refused before the database", "[cli][enqueue]") {
  auto res = enqueue_lines("{\"channel_id\":\"A\",\"estimated_cost\":1e8}\n"
                           "{\"channel_id\":\"B\",\"estimated_cost\":-1}\n"
                           "{\"channel_id\":\"C\",\"estimated_cost\":\"5\"}\n");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains("line 1: estimated_cost: must be from 0 to 1000000, got 1e+08"));
  CHECK_THAT(res.err, Catch::Contains("line 2: estimated_cost: must be from 0 to 1000000, got -1"));
  CHECK_THAT(res.err, Catch::Contains("line 3: estimated_cost: must be a number"));
  CHECK_THAT(res.err, !Catch::Contains("unreachable"));
}

TEST_CASE("the largest allowed estimated_cost is stored", "[cli][enqueue][db]") {
  test::fresh_database db;
  auto res = enqueue_lines("{\"channel_id\":\"A\",\"estimated_cost\":1000000}\n",
                           {{"SPOOL_DATABASE_URL", db.url()}});
  REQUIRE(res.exit_code == 0);
  pg::connection conn{db.url()};
  CHECK(conn.exec("SELECT estimated_cost::float8 FROM tasks").f64(0, 0) == 1000000.0);
}

TEST_CASE("U+0000 in a payload key or string is refused with its path", "[cli][enqueue]") {
  auto res = enqueue_lines(
    "{\"channel_id\":\"A\",\"payload\":{\"title\":\"a\\u0000b\"}}\n"
    "{\"channel_id\":\"A\",\"payload\":{\"k\\u0000\":1}}\n"
    "{\"channel_id\":\"A\",\"payload\":{\"scenes\":[{\"prompt\":\"ok\"},{\"prompt\":\"\\u0000\"}]}}\n"
    "{\"channel_id\":\"A\",\"client_id\":\"x\\u0000\"}\n");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains("line 1: payload.title: contains U+0000"));
  CHECK_THAT(res.err, Catch::Contains("line 2: payload.k\\u0000: contains U+0000"));
  CHECK_THAT(res.err, Catch::Contains("line 3: payload.scenes[1].prompt: contains U+0000"));
  CHECK_THAT(res.err, Catch::Contains("line 4: client_id: contains U+0000"));

  auto flag = run_spool({"enqueue", "--channel", "A", "--payload", R"({"t":"\u0000"})"},
                        no_database);
  CHECK(flag.exit_code == 2);
  CHECK_THAT(flag.err, Catch::Contains("payload.t: contains U+0000"));
}

TEST_CASE("duplicate keys in a JSONL line are refused", "[cli][enqueue]") {
  auto res = enqueue_lines("{\"channel_id\":\"A\",\"channel_id\":\"B\"}\n"
                           "{\"channel_id\":\"A\",\"payload\":{\"title\":\"x\",\"title\":\"y\"}}\n"
                           "{\"channel_id\":\"A\",\"payload\":{\"a\":{\"b\":1},\"c\":{\"b\":2}}}\n");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains("line 1: channel_id: duplicate key"));
  CHECK_THAT(res.err, Catch::Contains("line 2: payload.title: duplicate key"));
  // The same key in two different objects is fine.
  CHECK_THAT(res.err, !Catch::Contains("line 3"));

  auto flag = run_spool({"enqueue", "--channel", "A", "--payload", R"({"t":1,"t":2})"},
                        no_database);
  CHECK(flag.exit_code == 2);
  CHECK_THAT(flag.err, Catch::Contains("payload.t: duplicate key"));
}

TEST_CASE("enqueue --file on a directory, a missing file or an empty file is an error",
          "[cli][enqueue]") {
  auto dir = std::filesystem::temp_directory_path()
             / ("spool_enqueue_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto on_dir = run_spool({"enqueue", "--file", dir.string()}, no_database);
  CHECK(on_dir.exit_code == 2);
  CHECK_THAT(on_dir.err, Catch::Contains("--file") && Catch::Contains("is a directory"));

  auto empty = dir / "empty.jsonl";
  std::ofstream{empty} << "";
  auto on_empty = run_spool({"enqueue", "--file", empty.string()}, no_database);
  CHECK(on_empty.exit_code == 2);
  CHECK_THAT(on_empty.err, Catch::Contains("has no videos"));

  auto blank = dir / "blank.jsonl";
  std::ofstream{blank} << "\n  \n";
  CHECK(run_spool({"enqueue", "--file", blank.string()}, no_database).exit_code == 2);

  auto missing = run_spool({"enqueue", "--file", (dir / "nope.jsonl").string()}, no_database);
  CHECK(missing.exit_code == 2);
  CHECK_THAT(missing.err, Catch::Contains("does not exist"));

  auto on_stdin = run_spool({"enqueue", "--file", "-"}, no_database, "");
  CHECK(on_stdin.exit_code == 2);
  CHECK_THAT(on_stdin.err, Catch::Contains("standard input has no videos"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("a huge bad value is quoted in part, never echoed whole", "[cli][enqueue]") {
  std::string huge(5 << 20, 'x');
  huge[10] = ' '; // not a channel id
  auto res = enqueue_lines("{\"channel_id\":\"" + huge + "\",\"priority\":\"" + huge
                           + "\",\"" + huge + "\":1}\n");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains("line 1: channel_id: 'xxxxxxxxxx xxx"));
  CHECK_THAT(res.err, Catch::Contains("(5242880 bytes)"));
  CHECK_THAT(res.err, Catch::Contains("line 1: priority:"));
  CHECK_THAT(res.err, Catch::Contains("unknown field"));
  CHECK(res.err.size() < 2000);

  auto flag = run_spool({"enqueue", "--channel", huge.substr(0, 100000)}, no_database);
  CHECK(flag.exit_code == 2);
  CHECK(flag.err.size() < 2000);
}

TEST_CASE("a payload over 1 MiB is refused", "[cli][enqueue]") {
  std::string big(1 << 20, 'p');
  auto res = enqueue_lines("{\"channel_id\":\"A\",\"payload\":{\"script\":\"" + big + "\"}}\n");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains("line 1: payload: is 1048589 bytes of JSON; at most "
                                      "1048576 (1 MiB) per task"));
  CHECK(res.err.size() < 2000);
  // --payload cannot carry 1 MiB (the kernel caps one argument at 128 KiB),
  // but the flag path applies the same rule.
  try {
    store::make_task("A", "normal", "", "", "{\"script\":\"" + big + "\"}");
    FAIL("accepted");
  } catch (const store::input_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("payload: is 1048589 bytes"));
  }
}

TEST_CASE("a payload just under 1 MiB is accepted", "[cli][enqueue][db]") {
  test::fresh_database db;
  std::string big((1 << 20) - 20, 'p');
  auto res = enqueue_lines("{\"channel_id\":\"A\",\"payload\":{\"script\":\"" + big + "\"}}\n",
                           {{"SPOOL_DATABASE_URL", db.url()}});
  CHECK(res.exit_code == 0);
}

TEST_CASE("many bad lines are listed up to a limit and counted", "[cli][enqueue]") {
  std::string lines;
  for (int i = 0; i < 50; ++i)
    lines += "{\"channel_id\":\"A\",\"priority\":\"urgent\"}\n";
  auto res = enqueue_lines(lines);
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains("line 20: priority") && !Catch::Contains("line 21:"));
  CHECK_THAT(res.err, Catch::Contains("and 30 more problem(s)"));
}

// -- which database ---------------------------------------------------------------

namespace {

/// The shipped config with database_url set, as a temporary file.
std::string config_with_database(const std::string& url) {
  std::ifstream in{SPOOL_SOURCE_DIR "/config/spool.json"};
  std::stringstream text;
  text << in.rdbuf();
  auto cfg = boost::json::parse(text.str()).as_object();
  cfg["database_url"] = url;
  return test::temp_file(boost::json::serialize(cfg));
}

} // namespace

TEST_CASE("a --database-url wins over SPOOL_DATABASE_URL, which wins over the config",
          "[cli][db]") {
  test::fresh_database db;
  const std::string bad = "postgresql://nobody:secret@127.0.0.1:1/unreachable";
  auto cfg = config_with_database(db.url());

  // The config's database_url when nothing else is set.
  auto from_config = run_spool({"--log-level", "debug", "enqueue", "--config", cfg,
                                "--channel", "A"},
                               {{"SPOOL_DATABASE_URL", "<unset>"}});
  CHECK(from_config.exit_code == 0);
  CHECK_THAT(from_config.err, Catch::Contains("(from the config's database_url)"));

  // SPOOL_DATABASE_URL over the config.
  auto from_env = run_spool({"enqueue", "--config", cfg, "--channel", "A"},
                            {{"SPOOL_DATABASE_URL", bad}});
  CHECK(from_env.exit_code == 1);
  CHECK_THAT(from_env.err, Catch::Contains("127.0.0.1:1/unreachable"));

  // --database-url over both; the debug line names it, password redacted.
  auto from_flag = run_spool({"--log-level", "debug", "--database-url", db.url(), "enqueue",
                              "--config", cfg, "--channel", "A"},
                             {{"SPOOL_DATABASE_URL", bad}});
  CHECK(from_flag.exit_code == 0);
  CHECK_THAT(from_flag.err, Catch::Contains("(from --database-url)"));
  pg::connection conn{db.url()};
  CHECK(conn.exec("SELECT count(*) FROM tasks").i64(0, 0) == 2);

  auto flag_bad = run_spool({"--log-level", "debug", "--database-url", bad, "status"},
                            {{"SPOOL_DATABASE_URL", db.url()}});
  CHECK(flag_bad.exit_code == 1);
  CHECK_THAT(flag_bad.err, Catch::Contains("nobody:***@127.0.0.1:1"));
  CHECK_THAT(flag_bad.err, !Catch::Contains("secret"));
  std::filesystem::remove(cfg);
}

TEST_CASE("every subcommand follows --database-url", "[cli]") {
  const std::string url = "postgresql://127.0.0.1:1/flag";
  auto printed = run_spool({"--database-url", url, "db", "url"},
                           {{"SPOOL_DATABASE_URL", "postgresql://127.0.0.1:1/env"}});
  CHECK(printed.exit_code == 0);
  CHECK(printed.out == url + "\n");
  auto env = run_spool({"db", "url"}, {{"SPOOL_DATABASE_URL", "postgresql://127.0.0.1:1/env"}});
  CHECK(env.out == "postgresql://127.0.0.1:1/env\n");
  for (std::vector<std::string> cmd :
       {std::vector<std::string>{"migrate", "status"}, {"status"}, {"task", "show", "1"},
        {"priority", "1", "high"}, {"cancel", "1"}, {"enqueue", "--channel", "A"}}) {
    std::vector<std::string> args{"--database-url", url};
    args.insert(args.end(), cmd.begin(), cmd.end());
    auto res = run_spool(args, {{"SPOOL_DATABASE_URL", "postgresql://127.0.0.1:1/env"}});
    INFO(cmd.front());
    CHECK(res.exit_code == 1);
    CHECK_THAT(res.err, Catch::Contains("127.0.0.1:1/flag"));
  }
  auto empty = run_spool({"--database-url", "", "status"});
  CHECK(empty.exit_code == 2);
  CHECK_THAT(empty.err, Catch::Contains("--database-url: must not be empty"));
}

// -- status: stale workers and unserved stages ----------------------------------------

namespace {

void add_worker(pg::connection& conn, const std::string& id, const std::string& stages,
                const std::string& heartbeat_age, bool stopped = false) {
  conn.exec("INSERT INTO workers (id, host, pid, last_heartbeat, stages, lease_ms, stopped_at) "
            "VALUES ($1, 'testhost', 42, now() - $2::interval, $3::text[], 30000, "
            "CASE WHEN $4 THEN now() END)",
            {id, heartbeat_age, stages, stopped ? "true" : "false"});
}

} // namespace

TEST_CASE("status marks dead workers stale and warns about stages no live worker serves",
          "[cli][db][status]") {
  test::fresh_database db;
  std::map<std::string, std::string> env{{"SPOOL_DATABASE_URL", db.url()}};
  REQUIRE(run_spool({"enqueue", "--channel", "A"}, env).exit_code == 0);
  REQUIRE(run_spool({"enqueue", "--channel", "B"}, env).exit_code == 0);
  pg::connection conn{db.url()};
  add_worker(conn, "w-live-video", "{video_gen}", "1 second");
  add_worker(conn, "w-dead-assets", "{asset_gen}", "192 seconds");
  add_worker(conn, "w-stopped", "{asset_gen}", "1 second", true);

  auto text = run_spool({"status"}, env);
  REQUIRE(text.exit_code == 0);
  CHECK_THAT(text.out, Catch::Contains("w-dead-assets") && Catch::Contains("stale, no heartbeat for 3m1"));
  CHECK_THAT(text.out, Catch::Contains("w-stopped") && Catch::Contains("(stopped)"));
  CHECK_THAT(text.out, Catch::Contains("warning: 2 ready asset_gen run(s), but no live worker "
                                       "serves asset_gen"));

  auto js = run_spool({"status", "--json"}, env);
  REQUIRE(js.exit_code == 0);
  auto s = boost::json::parse(js.out).as_object();
  std::map<std::string, std::string> state;
  for (auto& w : s.at("workers").as_array())
    state[std::string{w.at("id").as_string()}] = std::string{w.at("state").as_string()};
  CHECK(state == std::map<std::string, std::string>{{"w-live-video", "live"},
                                                    {"w-dead-assets", "stale"},
                                                    {"w-stopped", "stopped"}});
  CHECK(s.at("workers").at(0).at("id") == "w-live-video"); // live ones first
  auto& unserved = s.at("unserved").as_array();
  REQUIRE(unserved.size() == 1);
  CHECK(unserved[0].at("stage") == "asset_gen");
  CHECK(unserved[0].at("ready") == 2);

  // A live worker for asset_gen ends the warning.
  add_worker(conn, "w-live-assets", "{asset_gen,narration}", "2 seconds");
  auto after = run_spool({"status", "--json"}, env);
  REQUIRE(after.exit_code == 0);
  CHECK(boost::json::parse(after.out).at("unserved").as_array().empty());
  CHECK_THAT(run_spool({"status"}, env).out, !Catch::Contains("warning:"));
}

TEST_CASE("status counts a live worker without registered stages as serving all",
          "[cli][db][status]") {
  test::fresh_database db;
  std::map<std::string, std::string> env{{"SPOOL_DATABASE_URL", db.url()}};
  REQUIRE(run_spool({"enqueue", "--channel", "A"}, env).exit_code == 0);
  pg::connection conn{db.url()};
  auto before = boost::json::parse(run_spool({"status", "--json"}, env).out);
  CHECK(before.at("unserved").as_array().size() == 1); // no worker at all
  add_worker(conn, "w-any", "{}", "1 second");
  auto after = boost::json::parse(run_spool({"status", "--json"}, env).out);
  CHECK(after.at("unserved").as_array().empty());
}

TEST_CASE("task show counts failed attempts and lost leases apart", "[db][cli]") {
  test::fresh_database db;
  std::map<std::string, std::string> env{{"SPOOL_DATABASE_URL", db.url()}};
  auto made = run_spool({"enqueue", "--channel", "A"}, env);
  REQUIRE(made.exit_code == 0);
  pg::connection conn{db.url()};
  auto id = conn.exec("SELECT id FROM tasks").i64(0, 0);
  conn.exec("UPDATE stage_runs SET failed_attempts = 2, lost_attempts = 3, attempt = 5 "
            "WHERE stage = 'asset_gen'");
  auto json = run_spool({"task", "show", std::to_string(id), "--json"}, env);
  REQUIRE(json.exit_code == 0);
  auto task = boost::json::parse(json.out).as_object();
  bool found = false;
  for (auto& r : task.at("stage_runs").as_array()) {
    if (r.at("stage") != "asset_gen")
      continue;
    found = true;
    CHECK(r.at("failed_attempts").to_number<int>() == 2);
    CHECK(r.at("lost_attempts").to_number<int>() == 3);
    CHECK(r.at("max_lost").to_number<int>() == 5);
  }
  CHECK(found);
  auto text = run_spool({"task", "show", std::to_string(id)}, env);
  REQUIRE(text.exit_code == 0);
  CHECK_THAT(text.out, Catch::Contains("fails") && Catch::Contains("lost"));
  std::istringstream lines{text.out};
  bool row = false;
  for (std::string line; std::getline(lines, line);)
    if (line.find("asset_gen") != std::string::npos && line.find(" 5 ") != std::string::npos) {
      std::istringstream cols{line};
      std::string stage, state, attempt, fails, lost;
      cols >> stage >> state >> attempt >> fails >> lost;
      row = attempt == "5" && fails == "2" && lost == "3";
    }
  CHECK(row);
}

TEST_CASE("cost estimate, enqueue estimates, the report and status through the CLI",
          "[cli][db][cost]") {
  // The shipped prices (config/spool.json, the default --config).
  auto est = run_spool({"cost", "estimate", "--payload",
                        R"({"duration_s": 30, "variations": 3, "images": 3, "hd": true})"});
  REQUIRE(est.exit_code == 0);
  CHECK_THAT(est.out, Catch::Contains("flux-pro") && Catch::Contains("price.instead: hd")
                        && Catch::Contains("0.10 x duration_s 30 x variations 3")
                        && Catch::Contains("free (no price)") && Catch::Contains("9.515"));
  auto as_json = run_spool({"cost", "estimate", "--json", "--payload", R"({"images": 2})"});
  REQUIRE(as_json.exit_code == 0);
  auto e = boost::json::parse(as_json.out).as_object();
  CHECK(e.at("usd").to_number<double>() == Approx(0.006 + 0.10 + 0.02));
  auto video = e.at("stages").at(1).as_object();
  CHECK(video.at("stage") == "video_gen");
  CHECK(video.at("assumed_1").as_array().size() == 2); // duration_s, variations
  auto bad = run_spool({"cost", "estimate", "--payload", "[1]"});
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Catch::Contains("payload"));

  test::fresh_database db;
  std::map<std::string, std::string> env{{"SPOOL_DATABASE_URL", db.url()}};
  auto enq = run_spool({"enqueue", "--file", "-"}, env,
                       R"({"channel_id":"A","client_id":"acme","payload":{"duration_s":30,"variations":1,"images":3}})"
                       "\n"
                       R"({"channel_id":"B","client_id":"acme","estimated_cost":1.5,"payload":{}})"
                       "\n");
  REQUIRE(enq.exit_code == 0);
  pg::connection conn{db.url()};
  auto tasks = conn.exec("SELECT estimated_cost::float8 FROM tasks ORDER BY id");
  CHECK(tasks.f64(0, 0) == Approx(3.029));
  CHECK(tasks.f64(1, 0) == Approx(1.5)); // given: kept
  CHECK(conn.exec("SELECT est_cost::float8 FROM stage_runs WHERE stage = 'video_gen' "
                  "ORDER BY task_id LIMIT 1")
          .f64(0, 0)
        == Approx(3.0));

  auto report = run_spool({"cost", "report", "--by", "client", "--json"}, env);
  REQUIRE(report.exit_code == 0);
  auto r = boost::json::parse(report.out).as_object();
  REQUIRE(r.at("rows").as_array().size() == 1);
  auto row = r.at("rows").at(0).as_object();
  CHECK(row.at("key") == "acme");
  CHECK(row.at("tasks") == 2);
  CHECK(row.at("estimated").to_number<double>() == Approx(4.529));
  CHECK(run_spool({"cost", "report", "--by", "channel"}, env).exit_code == 2);
  auto badday = run_spool({"cost", "report", "--day", "2026-02-30"}, env);
  CHECK(badday.exit_code == 2);
  CHECK_THAT(badday.err, Catch::Contains("--day"));

  auto status = run_spool({"status", "--json"}, env);
  REQUIRE(status.exit_code == 0);
  auto cost = boost::json::parse(status.out).at("cost").as_object();
  CHECK(cost.at("hard_usd").to_number<double>() == 150); // the defaults until a worker writes
  CHECK(cost.at("spent").to_number<double>() == 0);
}
