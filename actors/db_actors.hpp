#pragma once
// Actors that own a database connection each. Their handlers block in
// libpq, so they are detached (own thread, off CAF's scheduler). Each is
// linked to whoever spawns it and dies with it.
//
// claimer:     (claim_atom, stage, n, worker, lease_ms) -> claim_batch
// recorder:    (record_atom, worker, outcome_batch)     -> recorded_batch
// maintainer:  (register_atom, worker_info) -> bool; (heartbeat_atom, worker,
//              lease_ms) -> int; (rescue_atom) -> maintenance_report;
//              (sweep_atom, limits...) -> maintenance_report;
//              (pending_atom, stages) -> bool; (stopped_atom, worker) -> bool
// listener:    LISTENs on spool_wakeup and spool_cancel and sends each
//              notification to `subscriber` as (wakeup_atom, notice).

#include <caf/fwd.hpp>

#include <string>

namespace spool::actors {

caf::actor spawn_claimer(caf::local_actor* parent, const std::string& url);
caf::actor spawn_recorder(caf::local_actor* parent, const std::string& url);
caf::actor spawn_maintainer(caf::local_actor* parent, const std::string& url);
caf::actor spawn_listener(caf::local_actor* parent, const std::string& url,
                          caf::actor subscriber);

} // namespace spool::actors
