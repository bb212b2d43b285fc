#include "runtime/store/config_store.hpp"

#include <stdexcept>

namespace spool::store {

namespace {

/// The columns of a stored_config, in the order read_row expects.
constexpr const char* columns =
  "version, checksum, content, pushed_by, "
  "to_char(pushed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), note";

stored_config read_row(const pg::result& r, int row) {
  return stored_config{r.i64(row, 0), r.str(row, 1), r.str(row, 2),
                       r.str(row, 3), r.str(row, 4), r.str(row, 5)};
}

/// Inserts and NOTIFYs in one statement (so in one transaction, whatever
/// the caller's): listeners hear of a version only once it is committed.
int64_t insert_and_notify(pg::connection& c, const std::string& content,
                          const std::string& checksum, const std::string& pushed_by,
                          const std::string& note) {
  auto r = c.exec("WITH pushed AS ("
                  "  INSERT INTO spool_config_versions (checksum, content, pushed_by, note) "
                  "  VALUES ($1, $2, $3, $4) RETURNING version) "
                  "SELECT version, pg_notify('spool_config', version::text) FROM pushed",
                  {checksum, content, pushed_by, note}, "storing a configuration version");
  return r.i64(0, 0);
}

} // namespace

int64_t push_config(pg::connection& c, const std::string& content, const std::string& checksum,
                    const std::string& pushed_by, const std::string& note) {
  return insert_and_notify(c, content, checksum, pushed_by, note);
}

push_outcome push_config_if_changed(pg::connection& c, const std::string& content,
                                    const std::string& checksum,
                                    const std::string& pushed_by, const std::string& note) {
  return pg::transaction(c, [&](pg::connection& tx) {
    // EXCLUSIVE: readers (workers loading the newest version) go on;
    // another push waits until this one commits, then sees its row.
    tx.exec("LOCK TABLE spool_config_versions IN EXCLUSIVE MODE", {},
            "locking the configuration versions");
    auto latest = tx.exec("SELECT version, checksum FROM spool_config_versions "
                          "ORDER BY version DESC LIMIT 1",
                          {}, "reading the newest configuration version");
    if (latest.rows() == 1 && latest.text(0, 1) == checksum)
      return push_outcome{latest.i64(0, 0), false};
    return push_outcome{insert_and_notify(tx, content, checksum, pushed_by, note), true};
  });
}

std::optional<stored_config> latest_config(pg::connection& c) {
  auto r = c.exec(std::string{"SELECT "} + columns
                    + " FROM spool_config_versions ORDER BY version DESC LIMIT 1",
                  {}, "reading the newest configuration version");
  if (r.rows() == 0)
    return std::nullopt;
  return read_row(r, 0);
}

std::optional<stored_config> config_at(pg::connection& c, int64_t version) {
  auto r = c.exec(std::string{"SELECT "} + columns
                    + " FROM spool_config_versions WHERE version = $1",
                  {pg::to_param(version)}, "reading a configuration version");
  if (r.rows() == 0)
    return std::nullopt;
  return read_row(r, 0);
}

std::vector<stored_config> config_history(pg::connection& c, int limit) {
  auto r = c.exec(std::string{"SELECT "} + columns
                    + " FROM spool_config_versions ORDER BY version DESC LIMIT $1",
                  {pg::to_param(limit < 0 ? 0 : limit)}, "listing configuration versions");
  std::vector<stored_config> out;
  out.reserve(static_cast<std::size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(read_row(r, i));
  return out;
}

void record_applied_config(pg::connection& c, const std::string& worker_id,
                           const std::string& checksum, int64_t stored_version,
                           int64_t applied_us, const std::vector<std::string>& restart_pending) {
  // The epoch plus an interval is exact to the microsecond (to_timestamp
  // goes through a double).
  auto r = c.exec("UPDATE workers SET config_version = $2, "
                  "config_stored_version = NULLIF($3::bigint, 0), "
                  "config_applied_at = 'epoch'::timestamptz + $4::bigint * interval '1 microsecond', "
                  "config_restart_pending = $5::text[] "
                  "WHERE id = $1",
                  {worker_id, checksum, pg::to_param(stored_version), pg::to_param(applied_us),
                   pg::array_literal(restart_pending)},
                  "recording the configuration a worker applied");
  if (r.affected() == 0)
    throw std::runtime_error("recording the configuration a worker applied: no worker '"
                             + worker_id + "'");
}

} // namespace spool::store
