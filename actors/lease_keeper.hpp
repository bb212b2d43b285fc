#pragma once
// The lease keeper: registers the worker, records the configuration it
// applied, and heartbeats. Each heartbeat asks every pool, then the
// outcome writer, which claims they hold (in that order: a claim only moves
// from a pool to the writer, so it is named by one of them whenever it
// moves), sends them to the database to extend exactly those leases, and
// forwards each lease the database says is lost to the pool that holds it.
//
// Accepts:
//   (pools_atom, pool_set)          the pools to ask (sent on every change)
//   (config_atom, snapshot)         heartbeat interval, lease, stages
//   (applied_atom, applied_config)  recorded now, and again after a
//                                   re-registration
//   (stopped_atom)  -> bool         marks the worker stopped (at the end)

#include "runtime/config/config.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace spool::pg {
class outage_log;
}

namespace spool::actors {

struct lease_keeper_options {
  std::string worker_id;
  caf::actor heartbeater; // the database actor
  caf::actor outcomes;    // the outcome writer
  std::shared_ptr<pg::outage_log> outage;
  /// Where the worker serves /metrics (empty: nowhere); registered.
  std::string http_address;
};

/// Spawned linked to `parent`.
caf::actor spawn_lease_keeper(caf::local_actor* parent,
                              std::shared_ptr<const config::snapshot> config,
                              lease_keeper_options opts);

} // namespace spool::actors
