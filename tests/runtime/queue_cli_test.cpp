#include "runtime/pg/connection.hpp"
#include "runtime/store/task_input.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/test_db.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
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
