#pragma once
// The outcome writer: records the outcomes the pools hand it, in batches of
// at most worker.record_batch_limit, oldest first, through the database's
// recorder actor. Outcomes that arrive together are written in one round
// trip; a failed write is kept and tried again with backoff (the fence
// refuses whatever a lost lease made stale meanwhile).
//
// Accepts:
//   (record_atom, vector<outcome_record>)   queue outcomes
//   (held_atom)        -> held_report: the claims of the outcomes not yet
//                         recorded (the heartbeat keeps their leases)
//   (stats_atom)       -> int64_t: outcomes not yet recorded
//   (drain_atom)       -> bool, once nothing is left to record
//   (config_atom, snapshot)

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

struct outcome_writer_options {
  std::string worker_id;
  caf::actor recorder; // the database actor
  std::shared_ptr<pg::outage_log> outage;
  std::shared_ptr<worker_metrics> metrics; // may be null
};

/// Spawned linked to `parent`.
caf::actor spawn_outcome_writer(caf::local_actor* parent,
                                std::shared_ptr<const config::snapshot> config,
                                outcome_writer_options opts);

} // namespace spool::actors
