#pragma once
// The supervisor: one per worker process. It owns the stage pools, claims
// exactly the idle credit of each pool, dispatches jobs, arms a timeout per
// job, applies the retry policy to outcomes and records them in batches,
// heartbeats, runs the lease rescuer and the stuck-job sweep, wakes on
// LISTEN/NOTIFY, acts on cancels, replaces stage actors that die, and drains
// on request.
//
// Accepts: (drain_atom) — stop claiming, let running jobs finish within the
//          shutdown grace, release the rest, then quit.
// Quits by itself with --exit-when-idle once nothing is ready, running or
// scheduled. Sets *exit_code (0 after a clean drain) before it quits.

#include "runtime/config/config.hpp"

#include <caf/fwd.hpp>

#include <atomic>
#include <memory>
#include <string>

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
  std::shared_ptr<exec::command_runner> runner;
  std::shared_ptr<std::atomic<int>> exit_code;
};

caf::actor spawn_supervisor(caf::actor_system& sys,
                            std::shared_ptr<const config::snapshot> config,
                            supervisor_options opts);

} // namespace spool::actors
