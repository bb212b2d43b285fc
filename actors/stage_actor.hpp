#pragma once
// A stage actor holds at most one job at a time and runs it with the stage's
// executor. It never blocks: simulate waits with a timer, command hands the
// child process to the shared command runner and is told when it ends.
//
// Accepts: (job_atom, stage_job)  -> later sends (done_atom, stage_result)
//                                    to the supervisor
//          (cancel_atom, run_id)  -> stops the job; its result is cancelled
// Owned by the supervisor, which monitors it and replaces it when it dies.

#include <caf/fwd.hpp>

#include <memory>

namespace spool::exec {
class command_runner;
}

namespace spool::actors {

caf::actor spawn_stage_actor(caf::local_actor* supervisor,
                             std::shared_ptr<exec::command_runner> runner);

} // namespace spool::actors
