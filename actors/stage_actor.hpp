#pragma once
// A stage actor holds at most one job at a time and runs it with the stage's
// executor. It never blocks: simulate waits with a timer, command hands the
// child process to the shared command runner and is told when it ends.
//
// Accepts: (job_atom, stage_job)  -> later sends (done_atom, stage_result)
//                                    to its owner (the stage pool)
//          (cancel_atom, run_id)  -> stops the job; its result is cancelled
// Owned by its pool, which monitors it and replaces it when it dies; it
// monitors the pool in turn and ends with it. A program it started is
// stopped when the actor ends, however it ends.

#include <caf/fwd.hpp>

#include <memory>

namespace spool::exec {
class command_runner;
}

namespace spool::actors {

caf::actor spawn_stage_actor(caf::local_actor* owner,
                             std::shared_ptr<exec::command_runner> runner);

} // namespace spool::actors
