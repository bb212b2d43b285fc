#pragma once
// Real PostgreSQL for tests: a fresh database per test, cloned from a
// template that holds the migrated schema (built once per migration set).
// The server is $SPOOL_TEST_DATABASE_URL's when set, else the managed local
// cluster (started on demand).

#include <string>

namespace spool::test {

/// URL of a maintenance database on the test server (may create databases).
std::string admin_url();

/// `url` with its database name replaced by `dbname`.
std::string with_database(const std::string& url, const std::string& dbname);

class fresh_database {
public:
  /// A new database: migrated (from the template) or empty.
  explicit fresh_database(bool migrated = true);
  ~fresh_database();
  fresh_database(const fresh_database&) = delete;
  fresh_database& operator=(const fresh_database&) = delete;

  const std::string& url() const noexcept { return url_; }
  const std::string& name() const noexcept { return name_; }

private:
  std::string name_;
  std::string url_;
};

} // namespace spool::test
