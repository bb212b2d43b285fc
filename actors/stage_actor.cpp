#include "actors/stage_actor.hpp"

#include "actors/messages.hpp"
#include "actors/trace.hpp"
#include "runtime/exec/contract.hpp"
#include "runtime/exec/from_config.hpp"

#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/local_actor.hpp>
#include <caf/send.hpp>
#include <caf/sec.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>

#include <filesystem>
#include <optional>
#include <stdexcept>

namespace spool::actors {

namespace {

struct stage_state {
  caf::actor owner; // its pool
  std::shared_ptr<exec::command_runner> runner;
  std::optional<stage_job> job;
  uint64_t generation = 0; // results of earlier jobs are ignored
  /// The program running, if any; shared with the exit hook below.
  std::shared_ptr<std::optional<exec::command_runner::id>> command =
    std::make_shared<std::optional<exec::command_runner::id>>();
  int64_t started_us = 0;
  static inline const char* name = "stage_actor";
};


using self_ptr = caf::stateful_actor<stage_state>*;

void finish(self_ptr self, outcome result) {
  auto& st = self->state;
  if (!st.job)
    return;
  trace_step("result", st.job->run.run_id);
  self->send(st.owner, done_atom::value,
             stage_result{st.job->run.run_id, st.job->run.attempt, st.job->run.lease_token,
                          std::move(result), st.started_us, epoch_us()});
  st.job.reset();
  st.command->reset();
  ++st.generation;
}

void start_simulate(self_ptr self, const stage_job& j) {
  auto sim = exec::simulate(exec::simulate_settings_of(j.executor->simulate),
                            j.run.task_id, j.run.stage, j.run.attempt);
  if (sim.crash)
    throw std::runtime_error("injected crash (executor.errors.crash)");
  if (sim.latency.count() <= 0) {
    finish(self, std::move(sim.result));
    return;
  }
  self->delayed_send(self, sim.latency, sim_done_atom::value, self->state.generation,
                     std::move(sim.result));
}

void start_command(self_ptr self, const stage_job& j) {
  namespace fs = std::filesystem;
  exec::job_input in;
  in.task_id = j.run.task_id;
  in.stage = j.run.stage;
  in.attempt = j.run.attempt;
  in.call = j.run.failed_attempts + 1;
  in.data_dir = j.data_dir;
  in.work_dir = (fs::path{j.data_dir} / "tasks" / std::to_string(j.run.task_id) / j.run.stage)
                  .string();
  in.channel_id = j.run.channel_id;
  in.priority = j.run.priority;
  in.payload_json = j.run.payload;
  in.inputs_json = j.run.inputs;
  in.context_json = j.run.context;
  auto spec = exec::command_spec_of(j.executor->command, exec::make_job_input(in),
                                    j.timeout);
  auto me = caf::actor_cast<caf::actor>(self);
  auto gen = self->state.generation;
  *self->state.command = self->state.runner->start(
    std::move(spec), [me, gen](exec::command_result r) {
      caf::anon_send(me, cmd_done_atom::value, gen, std::move(r));
    });
}

caf::behavior stage_actor(self_ptr self, caf::actor owner,
                          std::shared_ptr<exec::command_runner> runner) {
  self->state.owner = std::move(owner);
  self->state.runner = std::move(runner);
  // Whenever this actor ends (retired, crashed, or its pool died), the
  // program it started ends too: nothing runs that no one waits for.
  self->attach_functor([runner = self->state.runner, command = self->state.command] {
    if (*command)
      runner->cancel(**command);
  });
  self->monitor(self->state.owner);
  self->set_down_handler([=](caf::down_msg& dm) {
    if (dm.source == self->state.owner.address())
      self->quit(dm.reason);
  });
  // An exception (a crashing executor) ends this actor; the pool sees the
  // reason in its DOWN message, retries the job and replaces the actor.
  self->set_exception_handler([](std::exception_ptr& ep) -> caf::error {
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      return caf::make_error(caf::sec::runtime_error, std::string{e.what()});
    } catch (...) {
      return caf::make_error(caf::sec::runtime_error, std::string{"unknown exception"});
    }
  });
  return {
    [=](job_atom, stage_job& j) {
      auto& st = self->state;
      if (st.job) // the supervisor never sends two; refuse rather than lose one
        throw std::logic_error("stage actor got a second job");
      st.job = std::move(j);
      st.started_us = epoch_us();
      trace_step("start", st.job->run.run_id);
      ++st.generation;
      if (st.job->executor->kind == config::executor_kind::command)
        start_command(self, *st.job);
      else
        start_simulate(self, *st.job);
    },
    [=](sim_done_atom, uint64_t gen, outcome& result) {
      if (gen == self->state.generation)
        finish(self, std::move(result));
    },
    [=](cmd_done_atom, uint64_t gen, const exec::command_result& r) {
      if (gen == self->state.generation)
        finish(self, exec::parse_command_result(r));
    },
    [=](cancel_atom, int64_t run_id) {
      auto& st = self->state;
      if (!st.job || st.job->run.run_id != run_id)
        return;
      if (*st.command) {
        st.runner->cancel(**st.command); // its result arrives as cancelled
      } else {
        outcome o;
        o.kind = outcome_kind::cancelled;
        o.message = "cancelled";
        finish(self, std::move(o));
      }
    },
  };
}

} // namespace

caf::actor spawn_stage_actor(caf::local_actor* owner,
                             std::shared_ptr<exec::command_runner> runner) {
  return owner->spawn<caf::monitored>(stage_actor, caf::actor_cast<caf::actor>(owner),
                                      std::move(runner));
}

} // namespace spool::actors
