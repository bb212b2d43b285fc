#pragma once
// Maintenance duties, each on its own timer: the lease rescuer (returns the
// runs of workers that stopped heartbeating), the stuck-job sweep (runs far
// past their timeout, work waiting too long to start) and the provider
// events (breaker, pause and quota changes, each logged by one worker of
// the cluster, every heartbeat interval). All run in the database through
// the maintainer actor and only log what they did.
//
// Accepts: (config_atom, snapshot) — new intervals apply from the next
//          round; the sweep uses the stages' current timeouts.
//          (events_atom) -> bool — logs the provider events waiting now
//          (the last round before the worker stops).

#include "runtime/config/config.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace spool {
class worker_metrics;
}
namespace spool::pg {
class outage_log;
}

namespace spool::actors {

/// Spawned linked to `parent`; `maintainer` is the database actor.
caf::actor spawn_maintenance(caf::local_actor* parent,
                             std::shared_ptr<const config::snapshot> config,
                             caf::actor maintainer, std::shared_ptr<pg::outage_log> outage,
                             std::string worker_id,
                             std::shared_ptr<worker_metrics> metrics = nullptr);

} // namespace spool::actors
