#pragma once

// Per-step timestamps of the hot path, logged at trace level
// (`spool --log-level trace run ...`) as
//
//   step <name> <key> <microseconds since the epoch>
//
// key: the stage for the steps before a claim returns, the run id after.
// bench/pickup_latency reads them to show where a job's pickup time goes:
// wakeup (a NOTIFY for the stage reached the listener), claim (the pool asked
// for runs), claim_sql / claim_sql_done (the claimer's call to the
// database), claimed (the pool got the run), start (its stage actor started
// the executor), result (the executor finished), to_writer (the outcome
// reached the outcome writer), record (the writer sent a batch; key: its
// first run), record_sql / record_sql_done (the recorder's call), recorded
// (the outcome is committed). Costs one level check when trace is off.

#include "actors/messages.hpp"

#include <spdlog/spdlog.h>

#include <string_view>

namespace spool::actors {

template <class Key>
void trace_step(std::string_view step, const Key& key) {
  if (spdlog::should_log(spdlog::level::trace))
    spdlog::trace("step {} {} {}", step, key, epoch_us());
}

} // namespace spool::actors
