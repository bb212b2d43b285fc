#include "tests/support/cli.hpp"
#include "tests/support/test_db.hpp"

#include <catch2/catch.hpp>

using spool::test::run_spool;

TEST_CASE("an unknown subcommand prints usage and exits 2", "[cli]") {
  auto res = run_spool({"frobnicate"});
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains("frobnicate"));
  CHECK_THAT(res.err, Catch::Contains("Usage"));
}

TEST_CASE("an unknown option prints usage and exits 2", "[cli]") {
  auto res = run_spool({"migrate", "up", "--bogus"});
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains("--bogus"));
  CHECK_THAT(res.err, Catch::Contains("Usage"));
}

TEST_CASE("no subcommand at all is a usage error", "[cli]") {
  auto res = run_spool({});
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains("Usage"));
}

// Named without a leading dash: ctest passes the name to Catch2, which would
// take "--help" as its own option, print its help and pass without running.
TEST_CASE("spool --help exits 0 and lists the subcommands and global options", "[cli]") {
  auto res = run_spool({"--help"});
  CHECK(res.exit_code == 0);
  CHECK_THAT(res.out, Catch::Contains("migrate") && Catch::Contains("db"));
  CHECK_THAT(res.out, Catch::Contains("--database-url") && Catch::Contains("--log-format"));
}

TEST_CASE("a bad log level is named", "[cli]") {
  auto res = run_spool({"--log-level", "loud", "migrate", "status"},
                       {{"SPOOL_DATABASE_URL", "postgresql://127.0.0.1:1/x"}});
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Catch::Contains("--log-level") && Catch::Contains("loud"));
}

TEST_CASE("an unreachable database is one clear line with the redacted URL", "[cli]") {
  auto res = run_spool({"migrate", "status"},
                       {{"SPOOL_DATABASE_URL", "postgresql://app:hunter2@127.0.0.1:1/spool"}});
  CHECK(res.exit_code == 1);
  CHECK_THAT(res.err, Catch::Contains("postgresql://app:***@127.0.0.1:1/spool"));
  CHECK_THAT(res.err, !Catch::Contains("hunter2"));
  // One line, no stack of noise.
  CHECK(std::count(res.err.begin(), res.err.end(), '\n') == 1);
}

TEST_CASE("migrate status lists every migration as applied on a migrated database",
          "[cli][db]") {
  spool::test::fresh_database db;
  auto res = run_spool({"migrate", "status"}, {{"SPOOL_DATABASE_URL", db.url()}});
  CHECK(res.exit_code == 0);
  CHECK_THAT(res.out, Catch::Contains("0001") && Catch::Contains("applied")
                        && Catch::Contains("0 pending"));
}

TEST_CASE("the json log format writes one JSON object a line", "[cli][db]") {
  spool::test::fresh_database db{false};
  auto res = run_spool({"--log-format", "json", "migrate", "up"},
                       {{"SPOOL_DATABASE_URL", db.url()}});
  CHECK(res.exit_code == 0);
  REQUIRE_FALSE(res.err.empty());
  size_t start = 0;
  while (start < res.err.size()) {
    auto end = res.err.find('\n', start);
    auto line = res.err.substr(start, end - start);
    CHECK_THAT(line, Catch::StartsWith("{\"time\":") && Catch::EndsWith("}"));
    CHECK_THAT(line, Catch::Contains("\"msg\":\"applied migration"));
    start = end + 1;
  }
}
