#pragma once
// The supervisor: one per worker process. It keeps the worker's lifecycle,
// monitoring and configuration routing; the work is done by actors of their
// own, which it spawns:
//   - a pool per stage (actors/pool.hpp): stage actors, credit, claims,
//     dispatch, job timeouts, retry decisions;
//   - the outcome writer (actors/outcome_writer.hpp): batched recording;
//   - the lease keeper (actors/lease_keeper.hpp): registration, heartbeats,
//     lost leases;
//   - maintenance (actors/maintenance.hpp): lease rescue, stuck-job sweep;
//   - the configuration source (actors/config_source.hpp): file watch,
//     stored versions;
//   - one database actor per duty (actors/db_actors.hpp), and the listener,
//     whose notifications it routes (wake-ups to a pool, cancels to all,
//     configuration pushes to the source).
// A pool that dies is replaced (its claims go back to the queue). A new
// configuration arrives as (config_atom, config_update): the supervisor
// diffs it with the one in force, keeps what needs a restart, logs
// `configuration_reloaded` with each changed key, sends the rest to every
// actor that uses it, spawns pools for new stages and lets removed ones
// drain.
//
// Accepts: (ping_atom) -> bool — answers while its mailbox is served (the
//          health check).
//          (drain_atom) — stop claiming, let running jobs finish within the
//          shutdown grace, release the rest, then quit.
//          (reload_atom, reason) — re-read the configuration source.
// Quits by itself with --exit-when-idle once nothing is ready, running or
// scheduled. Sets *exit_code (0 after a clean drain) before it quits.

#include "runtime/config/config.hpp"

#include <caf/fwd.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace spool {
class worker_metrics;
}
namespace spool::exec {
class command_runner;
}

namespace spool::actors {

struct supervisor_options {
  std::string database_url;
  /// Unique per process: host:pid:random.
  std::string worker_id;
  /// Absolute directory the stage programs write under.
  std::string data_dir;
  bool exit_when_idle = false;
  /// Where the configuration is re-read from: an absolute file path, "db",
  /// or empty (never).
  std::string config_source;
  /// File source: watch the file for changes.
  bool watch_config = true;
  /// The stored version the configuration came from (db; 0 otherwise).
  int64_t config_stored_version = 0;
  std::shared_ptr<exec::command_runner> runner;
  std::shared_ptr<std::atomic<int>> exit_code;
  /// The worker's metrics (may be null): the supervisor keeps the
  /// configuration and draining state in them and hands them to the actors
  /// that count.
  std::shared_ptr<worker_metrics> metrics;
  /// Where the worker serves /metrics ("host:port"; empty: nowhere), as
  /// registered for `spool status`.
  std::string http_address;
};

caf::actor spawn_supervisor(caf::actor_system& sys,
                            std::shared_ptr<const config::snapshot> config,
                            supervisor_options opts);

} // namespace spool::actors
