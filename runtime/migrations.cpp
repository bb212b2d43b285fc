#include "runtime/migrations.hpp"

#include "runtime/pg/connection.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string_view>
#include <sstream>

namespace spool {

namespace {

/// Advisory lock key shared by every Spool migrator ("spool" + "mig").
constexpr int64_t migration_lock_key = 0x73706f6f6c6d6967;

/// `s` without `prefix` and `suffix`, when it has both (and something
/// between them).
std::optional<std::string_view> strip(std::string_view s, std::string_view prefix,
                                      std::string_view suffix) {
  if (s.size() <= prefix.size() + suffix.size() || !s.starts_with(prefix)
      || !s.ends_with(suffix))
    return std::nullopt;
  return s.substr(prefix.size(), s.size() - prefix.size() - suffix.size());
}

/// [a-z0-9_]+
bool is_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

} // namespace

std::vector<migration> parse_migrations(
  const std::vector<std::pair<std::string, std::string>>& files) {
  std::map<int64_t, migration> by_version;
  std::map<std::string, migration> repeatables;
  for (auto& [file, content] : files) {
    std::string_view f = file;
    if (auto name = strip(f, "R_", ".sql"); name && is_name(*name)) {
      auto& r = repeatables[file];
      r.repeatable = true;
      r.name = std::string{*name};
      r.up_file = file;
      r.up_sql = content;
      continue;
    }
    // NNNN_name.up.sql or NNNN_name.down.sql
    bool up = f.ends_with(".up.sql");
    auto name = f.size() > 5 && f[4] == '_'
                    && std::all_of(f.begin(), f.begin() + 4, [](char c) { return c >= '0' && c <= '9'; })
                  ? strip(f, f.substr(0, 5), up ? ".up.sql" : ".down.sql")
                  : std::nullopt;
    if (!name || !is_name(*name))
      throw migration_error("migration file " + file
                            + ": name must look like NNNN_name.up.sql, "
                              "NNNN_name.down.sql or R_name.sql");
    auto digits = std::string{f.substr(0, 4)};
    auto version = std::stoll(digits);
    auto& mig = by_version[version];
    if (!mig.name.empty() && mig.name != *name)
      throw migration_error("migration file " + file + ": version "
                            + digits + " is already used by "
                            + mig.name);
    mig.version = version;
    mig.name = std::string{*name};
    if (up) {
      mig.up_file = file;
      mig.up_sql = content;
    } else {
      mig.down_file = file;
      mig.down_sql = content;
    }
  }
  std::vector<migration> out;
  for (auto& [version, mig] : by_version) {
    if (mig.up_file.empty())
      throw migration_error("migration " + mig.down_file
                            + " has no matching .up.sql");
    out.push_back(std::move(mig));
  }
  for (auto& [file, r] : repeatables)
    out.push_back(std::move(r));
  return out;
}

std::vector<migration> builtin_migrations() {
  std::vector<std::pair<std::string, std::string>> files;
  for (auto& f : embedded_migrations())
    files.emplace_back(f.name, f.content);
  return parse_migrations(files);
}

std::vector<migration> load_migrations(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw migration_error("migrations directory " + dir + " does not exist");
  std::vector<std::pair<std::string, std::string>> files;
  for (auto& entry : fs::directory_iterator(dir)) {
    auto name = entry.path().filename().string();
    if (entry.path().extension() != ".sql")
      continue;
    std::ifstream in{entry.path(), std::ios::binary};
    std::stringstream buf;
    buf << in.rdbuf();
    files.emplace_back(name, buf.str());
  }
  return parse_migrations(files);
}

migrator::migrator(pg::connection& conn, std::vector<migration> set)
  : conn_(conn), set_(std::move(set)) {
}

template <class F>
auto migrator::locked(F&& fn) {
  // A session-level lock: held across the per-migration transactions.
  conn_.query("SELECT pg_advisory_lock($1)", migration_lock_key);
  struct unlock {
    pg::connection& c;
    ~unlock() {
      try {
        if (c.ok())
          c.query("SELECT pg_advisory_unlock($1)", migration_lock_key);
      } catch (...) {
      }
    }
  } guard{conn_};
  ensure_table();
  return fn();
}

void migrator::ensure_table() {
  conn_.exec_script(R"sql(
    CREATE TABLE IF NOT EXISTS spool_schema_migrations (
      version    BIGINT PRIMARY KEY,
      name       TEXT NOT NULL,
      checksum   TEXT NOT NULL,
      applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS spool_schema_repeatables (
      file       TEXT PRIMARY KEY,
      checksum   TEXT NOT NULL,
      applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    ))sql",
                    "creating spool_schema_migrations");
}

void migrator::apply_repeatables() {
  std::map<std::string, std::string> recorded;
  auto res = conn_.exec("SELECT file, checksum FROM spool_schema_repeatables", {},
                        "reading applied repeatable scripts");
  for (int i = 0; i < res.rows(); ++i)
    recorded[res.str(i, 0)] = res.str(i, 1);
  std::vector<std::pair<const migration*, std::string>> changed;
  for (auto& mig : set_) {
    if (!mig.repeatable)
      continue;
    auto sum = checksum(mig.up_sql);
    if (auto r = recorded.find(mig.up_file); r == recorded.end() || r->second != sum)
      changed.emplace_back(&mig, sum);
  }
  if (changed.empty())
    return;
  const migration* current = nullptr;
  try {
    pg::transaction(conn_, [&](pg::connection& c) {
      for (auto& [mig, sum] : changed) {
        current = mig;
        c.exec_script(mig->up_sql);
        c.query("INSERT INTO spool_schema_repeatables (file, checksum) VALUES ($1, $2) "
                "ON CONFLICT (file) DO UPDATE SET checksum = EXCLUDED.checksum, "
                "applied_at = now()",
                mig->up_file, sum);
      }
    });
  } catch (const pg::error& e) {
    throw migration_error("repeatable script " + (current ? current->up_file : std::string{})
                          + " failed; none was applied: " + e.what());
  }
  for (auto& [mig, sum] : changed)
    spdlog::info("applied migration {} (repeatable)", mig->up_file);
}

std::vector<migrator::applied_row> migrator::applied() {
  auto res = conn_.exec(
    "SELECT version, checksum, to_char(applied_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD HH24:MI:SS') FROM spool_schema_migrations ORDER BY version",
    {}, "reading applied migrations");
  std::vector<applied_row> out;
  for (int i = 0; i < res.rows(); ++i)
    out.push_back({res.i64(i, 0), res.str(i, 1), res.str(i, 2) + " UTC"});
  return out;
}

std::string migrator::checksum(const std::string& sql) {
  // The server computes it: no hashing code of our own to get wrong.
  auto res = conn_.query("SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')", sql);
  return res.str(0, 0);
}

void migrator::verify_unchanged(const std::vector<applied_row>& rows) {
  for (auto& row : rows) {
    auto i = std::find_if(set_.begin(), set_.end(), [&](auto& m) {
      return !m.repeatable && m.version == row.version;
    });
    if (i == set_.end())
      continue; // applied by a newer binary: leave it alone
    if (checksum(i->up_sql) != row.checksum)
      throw migration_error("migration " + i->up_file
                            + " was changed after it was applied; released "
                              "migrations must not be edited (add a new one)");
  }
}

std::vector<int64_t> migrator::up(std::optional<int64_t> to) {
  return locked([&] {
    auto rows = applied();
    verify_unchanged(rows);
    std::vector<int64_t> done;
    int64_t newest = 0;
    for (auto& mig : set_) {
      if (mig.repeatable)
        continue;
      newest = std::max(newest, mig.version);
      if (to && mig.version > *to)
        break;
      bool is_applied = std::any_of(rows.begin(), rows.end(), [&](auto& r) {
        return r.version == mig.version;
      });
      if (is_applied)
        continue;
      auto sum = checksum(mig.up_sql);
      try {
        pg::transaction(conn_, [&](pg::connection& c) {
          c.exec_script(mig.up_sql);
          c.query("INSERT INTO spool_schema_migrations (version, name, checksum) "
                  "VALUES ($1, $2, $3)",
                  mig.version, mig.name, sum);
        });
      } catch (const pg::error& e) {
        throw migration_error("migration " + mig.up_file
                              + " failed and was rolled back: " + e.what());
      }
      spdlog::info("applied migration {}", mig.up_file);
      done.push_back(mig.version);
    }
    if (!to || *to >= newest)
      apply_repeatables();
    return done;
  });
}

std::vector<int64_t> migrator::down(int64_t steps) {
  return locked([&] {
    auto rows = applied();
    std::vector<int64_t> done;
    for (auto r = rows.rbegin(); r != rows.rend() && steps > 0; ++r, --steps) {
      auto i = std::find_if(set_.begin(), set_.end(), [&](auto& m) {
        return !m.repeatable && m.version == r->version;
      });
      if (i == set_.end())
        throw migration_error("applied migration version "
                              + std::to_string(r->version)
                              + " is unknown to this binary; cannot revert it");
      if (i->down_file.empty())
        throw migration_error("migration " + i->up_file
                              + " has no .down.sql; cannot revert it");
      try {
        pg::transaction(conn_, [&](pg::connection& c) {
          c.exec_script(i->down_sql);
          c.query("DELETE FROM spool_schema_migrations WHERE version = $1",
                  i->version);
        });
      } catch (const pg::error& e) {
        throw migration_error("migration " + i->down_file
                              + " failed and was rolled back: " + e.what());
      }
      spdlog::info("reverted migration {}", i->down_file);
      done.push_back(i->version);
    }
    // What the repeatable scripts define may have gone with it: the next up
    // applies them all again.
    if (!done.empty())
      conn_.exec("DELETE FROM spool_schema_repeatables", {}, "forgetting repeatable scripts");
    return done;
  });
}

std::vector<migration_status> migrator::status() {
  return locked([&] {
    auto rows = applied();
    std::vector<migration_status> out;
    for (auto& mig : set_) {
      if (mig.repeatable)
        continue;
      migration_status st{mig.version, mig.name, false, std::nullopt, false};
      for (auto& r : rows)
        if (r.version == mig.version) {
          st.applied = true;
          st.applied_at = r.applied_at;
          st.changed = checksum(mig.up_sql) != r.checksum;
        }
      out.push_back(std::move(st));
    }
    return out;
  });
}

} // namespace spool
