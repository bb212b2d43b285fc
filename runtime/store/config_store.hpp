#pragma once
// Configuration versions stored in the database (`spool config push`): each
// push is a new row of spool_config_versions, and its commit NOTIFYs
// `spool_config` (payload: the version number) so that every worker that
// follows the database (`spool run --config db`) applies it.
//
// Pure libpq, no CAF.

#include "runtime/pg/connection.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace spool::store {

/// The largest content stored (bytes), as the table's CHECK says.
inline constexpr std::size_t max_config_bytes = 1 << 20;
/// The longest note (characters), as the table's CHECK says.
inline constexpr std::size_t max_note_chars = 1000;

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

/// What push_config_if_changed did.
struct push_outcome {
  /// The new version, or the newest one when nothing was stored.
  int64_t version = 0;
  /// False when the newest stored version already had the checksum.
  bool created = false;
};

/// Like push_config, unless the newest stored version already has
/// `checksum`: then it stores and NOTIFYs nothing. Concurrent pushes are
/// serialized (an exclusive table lock held to the commit), so two pushes
/// of one configuration store it once.
push_outcome push_config_if_changed(pg::connection& c, const std::string& content,
                                    const std::string& checksum,
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
/// at their old values because they need a restart. Throws
/// std::runtime_error when no worker has that id (it registers first).
void record_applied_config(pg::connection& c, const std::string& worker_id,
                           const std::string& checksum, int64_t stored_version,
                           int64_t applied_us, const std::vector<std::string>& restart_pending);

} // namespace spool::store
