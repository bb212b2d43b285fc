#include "runtime/local_db.hpp"
#include "runtime/pg/pool.hpp"
#include "tests/support/test_db.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <future>
#include <thread>

using namespace spool;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

TEST_CASE("errors carry the SQLSTATE and what was being done", "[db][pg]") {
  test::fresh_database db;
  pg::connection conn{db.url()};
  try {
    conn.exec("SELECT * FROM no_such_table", {}, "reading the void");
    FAIL("no error");
  } catch (const pg::error& e) {
    CHECK(e.sqlstate() == "42P01");
    CHECK(e.context() == "reading the void");
    CHECK_THAT(e.what(), Catch::StartsWith("reading the void: ")
                           && Catch::Contains("no_such_table"));
    CHECK_FALSE(e.connection_lost());
  }
  // The connection stays usable after a statement error.
  CHECK(conn.query("SELECT $1::int + $2::int", 2, 3).i64(0, 0) == 5);
}

TEST_CASE("values are bound parameters, never spliced into SQL", "[db][pg]") {
  test::fresh_database db;
  pg::connection conn{db.url()};
  std::string evil = "'); DROP TABLE tasks; --";
  auto res = conn.query("SELECT $1::text, $2::text[]", evil,
                        pg::array_literal(std::vector<std::string>{evil, "a\"b\\c"}));
  CHECK(res.str(0, 0) == evil);
  CHECK(conn.query("SELECT ($1::text[])[2]",
                   pg::array_literal(std::vector<std::string>{evil, "a\"b\\c"}))
          .str(0, 0)
        == "a\"b\\c");
  CHECK(conn.exec("SELECT count(*) FROM tasks").i64(0, 0) == 0);
}

TEST_CASE("passwords are redacted from URLs in messages", "[pg]") {
  CHECK(pg::redact_url("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x");
  CHECK(pg::redact_url("host=db password=s3cret dbname=x") == "host=db password=*** dbname=x");
  CHECK(pg::redact_url("postgresql://db/x?password=s3cret&sslmode=require")
        == "postgresql://db/x?password=***&sslmode=require");
  CHECK(pg::redact_url("postgresql://bob@db/x") == "postgresql://bob@db/x");
}

TEST_CASE("the pool reconnects after PostgreSQL restarts", "[db][pg][restart]") {
  // A throwaway cluster of our own: restarting the shared one would disturb
  // tests running beside this one.
  char tmpl[] = "/tmp/spool_restartXXXXXX";
  fs::path home = ::mkdtemp(tmpl);
  local_cluster cluster{home};
  struct cleanup {
    local_cluster& c;
    fs::path home;
    ~cleanup() {
      try {
        c.destroy();
      } catch (...) {
      }
      fs::remove_all(home);
    }
  } guard{cluster, home};
  cluster.start();

  pg::pool_options opts;
  opts.size = 3;
  pg::pool pool{cluster.url(), opts};
  {
    auto a = pool.acquire();
    auto b = pool.acquire();
    CHECK(a->query("SELECT 1").i64(0, 0) == 1);
    CHECK(b->query("SELECT 2").i64(0, 0) == 2);
  }
  CHECK(pool.connects() == 2);

  cluster.stop();
  // While the server is down, a checkout waits and retries; bring the server
  // back shortly after.
  auto restarted = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(1s);
    cluster.start();
  });
  {
    auto c = pool.acquire();
    CHECK(c->query("SELECT 40 + 2").i64(0, 0) == 42);
  }
  restarted.get();
  // Both old connections were broken by the restart and get replaced.
  {
    auto a = pool.acquire();
    auto b = pool.acquire();
    CHECK(a->query("SELECT 1").i64(0, 0) == 1);
    CHECK(b->query("SELECT 1").i64(0, 0) == 1);
  }
  CHECK(pool.connects() >= 4);
}

TEST_CASE("a pool whose server stays down fails with a clear error", "[db][pg]") {
  pg::pool_options opts;
  opts.reconnect_timeout = 300ms;
  pg::pool pool{"postgresql://nobody:pw@127.0.0.1:1/none", opts};
  CHECK_THROWS_WITH(pool.acquire(), Catch::Contains("127.0.0.1:1")
                                      && !Catch::Contains("pw@"));
}
