#include "tests/support/test_db.hpp"

#include "runtime/local_db.hpp"
#include "runtime/migrations.hpp"
#include "runtime/pg/connection.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <random>

namespace spool::test {

namespace {

constexpr int64_t template_lock_key = 0x73706f6f6c746d70; // "spooltmp"

std::string template_name() {
  // One template per migration set: editing a migration builds a new one.
  std::string all;
  for (auto& f : embedded_migrations()) {
    all += f.name;
    all += f.content;
  }
  return "spool_tmpl_" + std::to_string(std::hash<std::string>{}(all) % 1000000000000ULL);
}

const std::string& ensure_template() {
  static std::once_flag once;
  static std::string name;
  std::call_once(once, [] {
    auto candidate = template_name();
    pg::connection admin{admin_url()};
    admin.query("SELECT pg_advisory_lock($1)", template_lock_key);
    auto exists = admin.query("SELECT 1 FROM pg_database WHERE datname = $1", candidate);
    if (exists.rows() == 0) {
      // Build under a temporary name, then rename: others never see a
      // half-migrated template.
      auto building = candidate + "_building";
      admin.exec("DROP DATABASE IF EXISTS " + pg::quote_ident(building) + " WITH (FORCE)");
      admin.exec("CREATE DATABASE " + pg::quote_ident(building) + " TEMPLATE template0");
      {
        pg::connection conn{with_database(admin_url(), building)};
        migrator{conn, builtin_migrations()}.up();
      }
      admin.exec("ALTER DATABASE " + pg::quote_ident(building) + " RENAME TO "
                 + pg::quote_ident(candidate));
    }
    admin.query("SELECT pg_advisory_unlock($1)", template_lock_key);
    name = candidate;
  });
  return name;
}

} // namespace

std::string admin_url() {
  if (const char* u = std::getenv("SPOOL_TEST_DATABASE_URL"); u != nullptr && *u != '\0')
    return u;
  static std::once_flag once;
  static std::string url;
  std::call_once(once, [] {
    local_cluster cluster;
    cluster.start();
    url = cluster.url_for("postgres");
  });
  return url;
}

std::string with_database(const std::string& url, const std::string& dbname) {
  for (std::string scheme : {"postgresql://", "postgres://"}) {
    if (url.rfind(scheme, 0) != 0)
      continue;
    auto rest = url.find_first_of("/?", scheme.size());
    std::string base = url.substr(0, rest);
    std::string query;
    if (rest != std::string::npos) {
      auto q = url.find('?', rest);
      if (q != std::string::npos)
        query = url.substr(q);
    }
    return base + "/" + dbname + query;
  }
  return url + " dbname=" + dbname; // keyword form: the last one wins
}

fresh_database::fresh_database(bool migrated) {
  static std::atomic<int> counter{0};
  std::random_device rd;
  name_ = "spool_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)
          + "_" + std::to_string(rd() % 100000);
  pg::connection admin{admin_url()};
  auto tmpl = migrated ? ensure_template() : std::string{"template0"};
  for (int attempt = 0;; ++attempt) {
    try {
      admin.exec("CREATE DATABASE " + pg::quote_ident(name_) + " TEMPLATE "
                 + pg::quote_ident(tmpl));
      break;
    } catch (const pg::error& e) {
      // 55006: the template is busy (another test is copying it): retry.
      if (e.sqlstate() != "55006" || attempt > 50)
        throw;
      ::usleep(100'000);
    }
  }
  url_ = with_database(admin_url(), name_);
}

fresh_database::~fresh_database() {
  try {
    pg::connection admin{admin_url()};
    admin.exec("DROP DATABASE IF EXISTS " + pg::quote_ident(name_) + " WITH (FORCE)");
  } catch (...) {
    // A leftover test database is harmless.
  }
}

} // namespace spool::test
