#pragma once
// A stage pool: one per stage of the configuration. It owns the stage's
// stage actors, claims exactly its idle credit, dispatches each claimed run
// to an idle actor under the configuration of the moment, arms the job's
// timeout, applies the retry policy to the outcome and hands it to the
// outcome writer. Data flows one way: claimer -> pool -> stage actor ->
// pool -> outcome writer.
//
// Accepts:
//   (config_atom, snapshot)  new settings: it grows at once, shrinks as its
//                            actors go idle, and drains when its stage left
//                            the configuration; running jobs keep the
//                            settings they started with
//   (wakeup_atom)            work may be ready: claim
//   (cancel_atom, run_id)    the task was cancelled: stop that run
//   (lost_atom, held_claim)  the database no longer attributes the claim
//                            to this worker: stop it, record nothing
//   (held_atom)              -> held_report (for the heartbeat)
//   (stats_atom)             -> pool_stats
//   (drain_atom)             claim nothing more; running jobs get the
//                            shutdown grace, then are handed back
// Tells its parent (drained_atom, stage) once draining (or retiring) has
// nothing left in flight, and (idle_atom, stage) after an empty claim with
// nothing running when exit_when_idle is set.

#include "runtime/config/config.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace spool {
class worker_metrics;
}
namespace spool::exec {
class command_runner;
}
namespace spool::pg {
class outage_log;
}

namespace spool::actors {

struct pool_options {
  std::string stage;
  std::string worker_id;
  /// Absolute directory the stage programs write under.
  std::string data_dir;
  bool exit_when_idle = false;
  caf::actor claimer;  // the database actor that claims
  caf::actor outcomes; // the outcome writer
  std::shared_ptr<exec::command_runner> runner;
  std::shared_ptr<pg::outage_log> outage;
  std::shared_ptr<worker_metrics> metrics; // may be null
};

/// Spawned monitored by `parent`, which gets its reports.
caf::actor spawn_pool(caf::local_actor* parent, std::shared_ptr<const config::snapshot> config,
                      pool_options opts);

} // namespace spool::actors
