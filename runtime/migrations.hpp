#pragma once
// Versioned schema migrations: migrations/NNNN_name.up.sql and .down.sql,
// applied in order, each in one transaction, recorded with a checksum in
// spool_schema_migrations, under an advisory lock so that concurrent
// migrators are safe.
//
// Repeatable scripts: migrations/R_name.sql (the queue's functions, one file
// per operation, CREATE OR REPLACE). After the versioned migrations, `up`
// applies each whose checksum differs from the one recorded in
// spool_schema_repeatables, in name order, in one transaction: a function
// changes by editing its file, not by copying it into a new migration. A
// `down` forgets the recorded checksums, so the next `up` applies them all.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace spool {

namespace pg {
class connection;
}

/// A file compiled into the binary (see cmake/embed_migrations.cmake).
struct embedded_file {
  const char* name;
  const char* content;
};
const std::vector<embedded_file>& embedded_migrations();

/// One version: its up and down scripts; or a repeatable script (then
/// `repeatable` is true, `version` 0 and `up_file`/`up_sql` hold it).
struct migration {
  int64_t version = 0;
  bool repeatable = false;
  std::string name;      // "init" for 0001_init.up.sql
  std::string up_file;   // "0001_init.up.sql"
  std::string up_sql;
  std::string down_file; // empty when there is no .down.sql
  std::string down_sql;
};

/// Thrown for a bad migration set, a changed applied file, or a failed script.
struct migration_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The migrations compiled into the binary.
std::vector<migration> builtin_migrations();
/// The migrations in `dir` (for development and tests).
std::vector<migration> load_migrations(const std::string& dir);
/// Builds the ordered set from (file name, content) pairs: the versions in
/// order, then the repeatable scripts in name order. Validates names,
/// duplicates and that every version has an up script.
std::vector<migration> parse_migrations(
  const std::vector<std::pair<std::string, std::string>>& files);

struct migration_status {
  int64_t version;
  std::string name;
  bool applied;
  std::optional<std::string> applied_at;
  bool changed; // applied, but the file differs from what was applied
};

class migrator {
public:
  migrator(pg::connection& conn, std::vector<migration> set);

  /// Applies pending migrations up to `to` (all when empty), then, when the
  /// schema is at the newest version, the repeatable scripts that changed.
  /// Returns the versions applied. Refuses when an applied file has changed.
  std::vector<int64_t> up(std::optional<int64_t> to = std::nullopt);
  /// Reverts the last `steps` applied migrations. Returns their versions.
  std::vector<int64_t> down(int64_t steps = 1);
  std::vector<migration_status> status();

private:
  struct applied_row {
    int64_t version;
    std::string checksum;
    std::string applied_at;
  };
  void ensure_table();
  void apply_repeatables();
  std::vector<applied_row> applied();
  std::string checksum(const std::string& sql);
  void verify_unchanged(const std::vector<applied_row>& rows);
  template <class F>
  auto locked(F&& fn);

  pg::connection& conn_;
  std::vector<migration> set_;
};

} // namespace spool
