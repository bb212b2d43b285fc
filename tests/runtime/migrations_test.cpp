#include "runtime/migrations.hpp"
#include "runtime/pg/connection.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/test_db.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

using namespace spool;
namespace fs = std::filesystem;

namespace {

std::string schema_dump(const std::string& url) {
  auto file = fs::temp_directory_path() / ("spool_dump_" + std::to_string(::getpid()) + ".sql");
  auto cmd = "/usr/lib/postgresql/15/bin/pg_dump --schema-only --no-owner '" + url + "' > "
             + file.string();
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in{file};
  std::string text, line;
  while (std::getline(in, line))
    if (line.rfind("\\restrict", 0) != 0 && line.rfind("\\unrestrict", 0) != 0)
      text += line + "\n"; // (un)restrict lines carry a random key
  fs::remove(file);
  return text;
}

struct temp_dir {
  fs::path path;
  temp_dir() {
    char tmpl[] = "/tmp/spool_migXXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~temp_dir() { fs::remove_all(path); }
  void write(const std::string& name, const std::string& content) const {
    std::ofstream{path / name} << content;
  }
};

int64_t count(pg::connection& c, const std::string& sql) {
  return c.exec(sql).i64(0, 0);
}

/// The built-in versioned migrations (the repeatable scripts aside).
std::size_t versions() {
  auto set = builtin_migrations();
  return static_cast<std::size_t>(
    std::count_if(set.begin(), set.end(), [](auto& m) { return !m.repeatable; }));
}

} // namespace

TEST_CASE("migrations up, down and up again give an identical schema", "[db][migrate]") {
  test::fresh_database db{false};
  pg::connection conn{db.url()};
  migrator m{conn, builtin_migrations()};
  auto applied = m.up();
  REQUIRE(applied.size() == versions());
  auto first = schema_dump(db.url());
  CHECK(first.find("CREATE TABLE public.stage_runs") != std::string::npos);
  auto reverted = m.down(static_cast<int64_t>(applied.size()));
  CHECK(reverted.size() == applied.size());
  CHECK(count(conn, "SELECT count(*) FROM pg_tables WHERE tablename = 'tasks'") == 0);
  m.up();
  CHECK(schema_dump(db.url()) == first);
}

TEST_CASE("migrating twice applies nothing the second time", "[db][migrate]") {
  test::fresh_database db{false};
  pg::connection conn{db.url()};
  migrator m{conn, builtin_migrations()};
  CHECK_FALSE(m.up().empty());
  CHECK(m.up().empty());
  for (auto& st : m.status()) {
    CHECK(st.applied);
    CHECK_FALSE(st.changed);
  }
}

TEST_CASE("an applied migration whose file changed is refused, naming the file",
          "[db][migrate]") {
  test::fresh_database db{false};
  temp_dir dir;
  dir.write("0001_first.up.sql", "CREATE TABLE IF NOT EXISTS a (x int);");
  dir.write("0001_first.down.sql", "DROP TABLE IF EXISTS a;");
  pg::connection conn{db.url()};
  migrator{conn, load_migrations(dir.path)}.up();

  dir.write("0001_first.up.sql", "CREATE TABLE IF NOT EXISTS a (x bigint);");
  dir.write("0002_second.up.sql", "CREATE TABLE IF NOT EXISTS b (x int);");
  migrator changed{conn, load_migrations(dir.path)};
  CHECK_THROWS_WITH(changed.up(), Catch::Contains("0001_first.up.sql")
                                    && Catch::Contains("changed"));
  // Nothing after the refusal was applied.
  CHECK(count(conn, "SELECT count(*) FROM pg_tables WHERE tablename = 'b'") == 0);
  auto st = changed.status();
  REQUIRE(st.size() == 2);
  CHECK(st[0].changed);
  CHECK_FALSE(st[1].applied);

  // The CLI says the same and fails.
  auto res = test::run_spool({"migrate", "--dir", dir.path.string(), "up"},
                             {{"SPOOL_DATABASE_URL", db.url()}});
  CHECK(res.exit_code == 1);
  CHECK_THAT(res.err, Catch::Contains("0001_first.up.sql"));
}

TEST_CASE("a failing migration is rolled back whole and reported with its file",
          "[db][migrate]") {
  test::fresh_database db{false};
  temp_dir dir;
  dir.write("0001_ok.up.sql", "CREATE TABLE IF NOT EXISTS ok_table (x int);");
  dir.write("0002_broken.up.sql",
            "CREATE TABLE IF NOT EXISTS half (x int);\nSELECT no_such_column FROM half;");
  pg::connection conn{db.url()};
  migrator m{conn, load_migrations(dir.path)};
  CHECK_THROWS_WITH(m.up(), Catch::Contains("0002_broken.up.sql")
                              && Catch::Contains("no_such_column"));
  CHECK(count(conn, "SELECT count(*) FROM pg_tables WHERE tablename = 'ok_table'") == 1);
  CHECK(count(conn, "SELECT count(*) FROM pg_tables WHERE tablename = 'half'") == 0);
  CHECK(count(conn, "SELECT count(*) FROM spool_schema_migrations") == 1);
}

TEST_CASE("two concurrent migrators apply every migration exactly once", "[db][migrate]") {
  test::fresh_database db{false};
  auto run = [&] {
    pg::connection conn{db.url()};
    return migrator{conn, builtin_migrations()}.up().size();
  };
  for (int round = 0; round < 3; ++round) {
    auto a = std::async(std::launch::async, run);
    auto b = std::async(std::launch::async, run);
    auto total = a.get() + b.get();
    CHECK(total == (round == 0 ? versions() : 0));
  }
  pg::connection conn{db.url()};
  CHECK(count(conn, "SELECT count(*) FROM spool_schema_migrations")
        == static_cast<int64_t>(versions()));
  CHECK(count(conn, "SELECT count(*) FROM spool_schema_repeatables")
        == static_cast<int64_t>(builtin_migrations().size() - versions()));
}

TEST_CASE("migration file names are validated", "[migrate]") {
  CHECK_THROWS_WITH(parse_migrations({{"1_bad.up.sql", ""}}), Catch::Contains("1_bad.up.sql"));
  CHECK_THROWS_WITH(parse_migrations({{"0001_a.down.sql", ""}}),
                    Catch::Contains("no matching .up.sql"));
  CHECK_THROWS_WITH(parse_migrations({{"0001_a.up.sql", ""}, {"0001_b.up.sql", ""}}),
                    Catch::Contains("already used"));
  auto set = parse_migrations({{"0002_b.up.sql", "x"}, {"0001_a.up.sql", "y"}});
  REQUIRE(set.size() == 2);
  CHECK(set[0].name == "a");
  CHECK(set[1].version == 2);
}

TEST_CASE("a repeatable script is applied again exactly when it changed, and after a down",
          "[db][migrate]") {
  test::fresh_database db{false};
  pg::connection conn{db.url()};
  temp_dir dir;
  dir.write("0001_t.up.sql", "CREATE TABLE t (x INTEGER);");
  dir.write("0001_t.down.sql", "DROP TABLE t;");
  dir.write("R_f.sql", "CREATE OR REPLACE FUNCTION f() RETURNS INTEGER LANGUAGE sql AS "
                       "$$ SELECT 1 $$;");
  auto set = load_migrations(dir.path.string());
  REQUIRE(set.size() == 2);
  CHECK(set[1].repeatable);
  migrator{conn, set}.up();
  CHECK(count(conn, "SELECT f()") == 1);
  auto applied_at = [&] {
    return conn.exec("SELECT applied_at::text FROM spool_schema_repeatables").str(0, 0);
  };
  auto first = applied_at();
  migrator{conn, load_migrations(dir.path.string())}.up(); // unchanged: not applied
  CHECK(applied_at() == first);
  // A change to the function is an edit of its file, not a new migration.
  dir.write("R_f.sql", "CREATE OR REPLACE FUNCTION f() RETURNS INTEGER LANGUAGE sql AS "
                       "$$ SELECT 2 $$;");
  migrator{conn, load_migrations(dir.path.string())}.up();
  CHECK(count(conn, "SELECT f()") == 2);
  // A down forgets them: the next up applies them again.
  migrator m{conn, load_migrations(dir.path.string())};
  m.down(1);
  CHECK(count(conn, "SELECT count(*) FROM spool_schema_repeatables") == 0);
  conn.exec("DROP FUNCTION f()");
  m.up();
  CHECK(count(conn, "SELECT f()") == 2);
  // A failing script applies none of them and says which.
  dir.write("R_g.sql", "CREATE FUNCTION broken(");
  dir.write("R_f.sql", "CREATE OR REPLACE FUNCTION f() RETURNS INTEGER LANGUAGE sql AS "
                       "$$ SELECT 3 $$;");
  CHECK_THROWS_WITH(migrator(conn, load_migrations(dir.path.string())).up(),
                    Catch::Contains("R_g.sql"));
  CHECK(count(conn, "SELECT f()") == 2);
}
