#pragma once
// The message vocabulary of the worker's actors: atoms (short verbs) and
// message structs (nouns). All messages stay inside one process, so the
// structs are allowed as local-only types instead of being inspectable.

#include "runtime/config/config.hpp"
#include "runtime/exec/command_runner.hpp"
#include "runtime/outcome.hpp"
#include "runtime/store/config_store.hpp"
#include "runtime/store/maintenance.hpp"
#include "runtime/store/providers.hpp"
#include "runtime/store/store.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/actor.hpp>
#include <caf/atom.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace spool::actors {

// -- atoms ---------------------------------------------------------------------

using claim_atom = caf::atom_constant<caf::atom("claim")>;
using record_atom = caf::atom_constant<caf::atom("record")>;
using heartbeat_atom = caf::atom_constant<caf::atom("heartbeat")>;
using rescue_atom = caf::atom_constant<caf::atom("rescue")>;
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;
using pending_atom = caf::atom_constant<caf::atom("pending")>;
using register_atom = caf::atom_constant<caf::atom("register")>;
using stopped_atom = caf::atom_constant<caf::atom("stopped")>;
using poll_atom = caf::atom_constant<caf::atom("poll")>;
using wakeup_atom = caf::atom_constant<caf::atom("wakeup")>;
using job_atom = caf::atom_constant<caf::atom("job")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using timeout_atom = caf::atom_constant<caf::atom("timeout")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using grace_atom = caf::atom_constant<caf::atom("grace")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using sim_done_atom = caf::atom_constant<caf::atom("simdone")>;
using cmd_done_atom = caf::atom_constant<caf::atom("cmddone")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using config_atom = caf::atom_constant<caf::atom("config")>;
using reload_atom = caf::atom_constant<caf::atom("reload")>;
using held_atom = caf::atom_constant<caf::atom("held")>;
using lost_atom = caf::atom_constant<caf::atom("lost")>;
using idle_atom = caf::atom_constant<caf::atom("idle")>;
using drained_atom = caf::atom_constant<caf::atom("drained")>;
using pools_atom = caf::atom_constant<caf::atom("pools")>;
using applied_atom = caf::atom_constant<caf::atom("applied")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using fetch_atom = caf::atom_constant<caf::atom("fetch")>;
using sync_atom = caf::atom_constant<caf::atom("sync")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using events_atom = caf::atom_constant<caf::atom("events")>;
using warm_atom = caf::atom_constant<caf::atom("warm")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;

/// How long to wait for a database actor's answer to a request that takes
/// `calls` database calls: their client-side deadlines, and a margin.
inline std::chrono::milliseconds db_budget(const config::worker_config& w, int calls = 1) {
  using namespace std::chrono_literals;
  return config::to_duration(w.db_call_timeout_s) * calls + 5s;
}

/// Now, in microseconds since the epoch (the worker's clock).
inline int64_t epoch_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

// -- messages ------------------------------------------------------------------

/// Runs claimed for one stage, and whether its provider's limits held the
/// claim back (then `wait`: when they may admit again; none: when a running
/// call of the provider ends, which NOTIFYs).
struct claim_batch {
  std::string stage;
  std::vector<store::claimed_run> runs;
  std::string held_back;
  std::optional<std::chrono::milliseconds> wait;
};

/// Outcomes to record in one round trip.
struct outcome_batch {
  std::vector<store::outcome_record> records;
};

/// What the store said about each recorded outcome, in order. An outcome
/// the database refused even as a plain failure comes back not accepted,
/// with state "unrecordable".
struct recorded_batch {
  std::vector<store::recorded> results;
};

/// The claims a worker is executing or recording an outcome for, and the
/// newest lease token whose claim reply it has had or given up on.
struct heartbeat_request {
  std::string worker;
  std::chrono::milliseconds lease{0};
  std::vector<store::held_claim> held;
  int64_t horizon = 0;
};

/// The heartbeat's answer: claims lost, and runs handed back.
struct heartbeat_reply {
  std::vector<store::heartbeat_note> notes;
};

/// A claim request. `deadline` (steady clock): a request still in the
/// claimer's mailbox past it is dropped unanswered, so that a backlog built
/// while the database hung claims nothing nobody waits for.
struct claim_request {
  std::string stage;
  /// The stage's provider (empty: none) and its fallback (may be empty).
  std::string provider;
  std::string fallback;
  int limit = 0;
  std::string worker;
  std::chrono::milliseconds lease{0};
  int64_t token = 0;
  std::chrono::steady_clock::time_point deadline;
};

/// One job for a stage actor: the claimed run and the configuration it runs
/// under (a running job keeps its snapshot when the config changes).
struct stage_job {
  store::claimed_run run;
  std::shared_ptr<const config::snapshot> config;
  const config::stage_config* stage = nullptr; // points into *config
  /// The executor to run: the stage's, or its fallback's when the run was
  /// admitted by the fallback provider (points into *config).
  const config::executor_config* executor = nullptr;
  std::string data_dir;                        // absolute
  std::chrono::milliseconds timeout{0};
};

/// A stage actor's report: how the execution of a claim ended.
struct stage_result {
  int64_t run_id = 0;
  int attempt = 0;
  int64_t lease_token = 0;
  outcome result;
  /// When the executor started and ended (microseconds since the epoch).
  int64_t started_us = 0;
  int64_t finished_us = 0;
};

/// A notification from PostgreSQL (spool_wakeup: a stage name; spool_cancel:
/// a run id).
struct notice {
  std::string channel;
  std::string payload;
};

/// Sent by the worker's maintenance actor after a rescue or stuck sweep.
struct maintenance_report {
  int rescued = 0;        // runs returned to the queue (or failed) after lost leases
  std::vector<int64_t> rescued_runs; // the first few of them, for the log
  int failed = 0;         // of those, runs past their lost-lease limit
  int stuck = 0;          // running runs the stuck sweep rescued
  int stale = 0;          // runs waiting to start for longer than a sweep interval
  int stale_approval = 0; // tasks awaiting approval for longer than that
};

/// What an actor on the data path holds that the database attributes to
/// this worker: claims being executed or recorded, and the lease tokens of
/// its claims still waiting for the database's reply.
struct held_report {
  std::vector<store::held_claim> held;
  std::vector<int64_t> claims_in_flight;
};

/// A pool's counters, for the progress line and exit-when-idle.
struct pool_stats {
  std::string stage;
  int size = 0;    // stage actors
  int busy = 0;    // of them executing a job
  int claiming = 0; // runs asked for by the claim in flight
  uint64_t ok = 0, failed = 0, retried = 0;
  bool retiring = false; // its stage left the configuration
  /// Why its provider's limits held its last claim back; empty: they did not.
  std::string held_back;
};

/// A configuration to apply, and where it came from.
struct config_update {
  std::shared_ptr<const config::snapshot> config;
  /// "SIGHUP", "file change", "config push", ...
  std::string reason;
  /// The stored version it came from (spool config push); 0 for a file.
  int64_t stored_version = 0;
};

/// The configuration a worker applied, for its row in `workers`.
struct applied_config {
  std::string worker;
  std::string checksum;
  int64_t stored_version = 0;
  int64_t applied_us = 0;
  std::vector<std::string> restart_pending;
};

/// Every pool that may hold work, the retiring ones included, and the pool
/// that serves each configured stage (where its wake-ups go).
struct pool_set {
  std::vector<caf::actor> pools;
  std::map<std::string, caf::actor> by_stage;
};

} // namespace spool::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::claim_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::outcome_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::recorded_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::heartbeat_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::heartbeat_reply)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::claim_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::store::worker_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::stage_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::stage_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::notice)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::maintenance_report)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::exec::command_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::outcome)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<spool::store::stage_limit>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::held_report)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::pool_stats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::config_update)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::applied_config)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::actors::pool_set)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<spool::store::outcome_record>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::store::held_claim)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<const spool::config::snapshot>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(spool::store::stored_config)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<spool::store::provider_event>)
