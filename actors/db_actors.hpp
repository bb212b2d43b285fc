#pragma once
// Actors that own a database connection each. Their handlers block in
// libpq, so they are detached (own thread, off CAF's scheduler), and each
// call has a client-side deadline (db_options::connection.call_timeout), so
// a hung server delays only the duty whose call is waiting: heartbeats,
// claims, outcome recording and maintenance each have their own connection.
// Each is linked to whoever spawns it and dies with it. Failures come back
// as error replies; outages are logged once through the shared outage_log.
//
// claimer:     (claim_atom, claim_request) -> claim_batch
// recorder:    (record_atom, worker, outcome_batch) -> recorded_batch; a
//              batch the database refuses is split until the bad record is
//              found, which is then recorded as a permanent failure
//              carrying the database's message; the rest are recorded.
// all but the listener: (config_atom, call_timeout_ms) sets the client-side
//              deadline of later calls (db_call_timeout_s is live).
// heartbeater: (register_atom, worker_info) -> bool;
//              (applied_atom, applied_config) -> bool;
//              (heartbeat_atom, heartbeat_request) -> heartbeat_reply;
//              (stopped_atom, worker) -> bool
// maintainer:  (rescue_atom) -> maintenance_report;
//              (sweep_atom, stage_limits, margin_s, stale_after_s)
//                -> maintenance_report;
//              (pending_atom, stages) -> bool;
//              (fetch_atom) -> stored_config (the newest pushed; version 0
//              when none);
//              (sync_atom, providers_json, budgets_json) -> bool: writes provider
//              limits and budgets;
//              (events_atom, worker) -> vector<provider_event> not yet
//              logged by any worker, now this one's to log
// listener:    LISTENs on spool_wakeup, spool_cancel and spool_config and
//              sends each notification to `subscriber` as (wakeup_atom,
//              notice), except a stage's wake-up, which goes straight to
//              the stage's pool as (wakeup_atom) once (pools_atom,
//              pool_set) named it; after each (re)connect also an empty
//              spool_wakeup and spool_config notice (what was missed while
//              deaf).

#include "runtime/pg/connection.hpp"

#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace spool::pg {
class outage_log;
}

namespace spool::actors {

struct db_options {
  std::string url;
  pg::connection_options connection;
  std::shared_ptr<pg::outage_log> outage;
};

caf::actor spawn_claimer(caf::local_actor* parent, const db_options& db);
caf::actor spawn_recorder(caf::local_actor* parent, const db_options& db);
caf::actor spawn_heartbeater(caf::local_actor* parent, const db_options& db);
caf::actor spawn_maintainer(caf::local_actor* parent, const db_options& db);
caf::actor spawn_listener(caf::local_actor* parent, const db_options& db,
                          caf::actor subscriber);

} // namespace spool::actors
