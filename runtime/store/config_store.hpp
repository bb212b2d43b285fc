#pragma once
// Configuration versions stored in the database (`spool config push`): each
// push is a new row of spool_config_versions, and its commit NOTIFYs
// `spool_config` (payload: the version number) so that every worker that
// follows the database (`spool run --config db`) applies it.
//
// Pure libpq, no CAF.

#include "runtime/pg/connection.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace spool::store {

/// One stored configuration version.
struct stored_config {
  /// 1, 2, 3, ... in push order.
  int64_t version = 0;
  /// config::compute_version of the parsed content (16 hex digits).
  std::string checksum;
  /// The file as pushed (comments kept).
  std::string content;
  /// Who pushed it (user@host).
  std::string pushed_by;
  /// When, ISO 8601 with time zone.
  std::string pushed_at;
  /// Free text, e.g. "rollback to 3".
  std::string note;
};

/// Stores `content` as a new version and NOTIFYs spool_config, in one
/// transaction. The caller has validated it. Returns the new version.
int64_t push_config(pg::connection& c, const std::string& content, const std::string& checksum,
                    const std::string& pushed_by, const std::string& note);

/// The newest version, or nullopt when none was pushed.
std::optional<stored_config> latest_config(pg::connection& c);

/// One version, or nullopt when it does not exist.
std::optional<stored_config> config_at(pg::connection& c, int64_t version);

/// Newest first, at most `limit`.
std::vector<stored_config> config_history(pg::connection& c, int limit);

/// Records the configuration a worker applied: its checksum, the stored
/// version it came from (0 for a file), when it applied it (microseconds
/// since the epoch, the worker's clock) and the changed properties it kept
/// at their old values because they need a restart.
void record_applied_config(pg::connection& c, const std::string& worker_id,
                           const std::string& checksum, int64_t stored_version,
                           int64_t applied_us, const std::vector<std::string>& restart_pending);

} // namespace spool::store
