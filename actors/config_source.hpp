#pragma once
// The configuration source: re-reads where the worker's configuration comes
// from and sends each valid result to its subscriber (the supervisor) as
// (config_atom, config_update). An invalid configuration is refused with
// every problem logged as `path: message`; the one in force stays.
//
// Sources:
//   a file  re-read on (reload_atom, reason) — SIGHUP — and when the file's
//           content changes (inotify on its directory, debounced; survives
//           editors that save by rename)
//   "db"    the newest version stored by `spool config push`, fetched on
//           (reload_atom, reason) — its NOTIFY, SIGHUP, a reconnect of the
//           listener — when it differs from the version in force
//   ""      nothing: reloads are logged and ignored

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace spool::pg {
class outage_log;
}

namespace spool::actors {

struct config_source_options {
  /// An absolute file path, "db", or empty.
  std::string source;
  /// A file: watch it (else only reload_atom re-reads it).
  bool watch = true;
  /// db: the stored version in force at start.
  int64_t stored_version = 0;
  caf::actor maintainer; // db: fetches the newest stored version
  caf::actor subscriber;
  std::shared_ptr<pg::outage_log> outage;
};

/// Spawned linked to `parent`.
caf::actor spawn_config_source(caf::local_actor* parent, config_source_options opts);

} // namespace spool::actors
