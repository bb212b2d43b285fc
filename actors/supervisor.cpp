#include "actors/supervisor.hpp"

#include "actors/db_actors.hpp"
#include "actors/messages.hpp"
#include "actors/stage_actor.hpp"
#include "runtime/config/retry.hpp"

#include <boost/json.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <unordered_map>

namespace spool::actors {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

/// Periodic duties, each on its own timer.
enum class duty : int { heartbeat, rescue, sweep, poll };

/// One stage's pool of stage actors and its claim bookkeeping.
struct pool_state {
  std::vector<caf::actor> idle;
  size_t size = 0;
  int claiming = 0;     // runs asked for by the claim in flight
  bool more = true;     // the queue may hold ready runs for this stage
  bool recheck = false; // woken while a claim was in flight
  bool claim_queued = false; // a (claim_atom, stage) to ourselves is pending
  uint64_t ok = 0, failed = 0, retried = 0;
};

struct job_state {
  stage_job job;
  caf::actor actor;
  bool timed_out = false; // our timer fired; its cancel reads as a timeout
  bool releasing = false; // drain: hand the run back
  bool cancelled = false; // the task was cancelled: record nothing
};

struct supervisor_state {
  std::shared_ptr<const config::snapshot> config;
  supervisor_options opts;
  caf::actor claimer, recorder, maintainer, listener;
  std::map<std::string, pool_state> pools;
  std::unordered_map<int64_t, job_state> jobs;      // run id -> job
  std::map<caf::actor_addr, std::string> stage_of;  // every stage actor
  std::map<caf::actor_addr, int64_t> busy;          // stage actor -> run id
  std::vector<store::outcome_record> pending;
  bool flushing = false;
  bool flush_queued = false; // a (flush_atom) to ourselves is pending
  bool draining = false;
  bool finishing = false;
  bool checking_idle = false;
  std::mt19937_64 rng{std::random_device{}()};
  steady::time_point last_progress = steady::now();
  static inline const char* name = "supervisor";
};

using self_ptr = caf::stateful_actor<supervisor_state>*;

const config::worker_config& worker(self_ptr self) {
  return self->state.config->worker;
}

void maybe_claim(self_ptr self, const std::string& stage);
void maybe_flush(self_ptr self);
void check_done(self_ptr self);
void check_idle(self_ptr self);

// -- stage actors ------------------------------------------------------------------

void add_stage_actor(self_ptr self, const std::string& stage) {
  auto a = spawn_stage_actor(self, self->state.opts.runner);
  self->state.stage_of[a.address()] = stage;
  auto& p = self->state.pools[stage];
  p.idle.push_back(std::move(a));
  ++p.size;
}

// -- outcomes ----------------------------------------------------------------------

/// Queues an outcome. The flush goes through our own mailbox, behind the
/// results already waiting there, so outcomes that finish together are
/// written in one round trip.
void record(self_ptr self, store::outcome_record rec) {
  auto& st = self->state;
  st.pending.push_back(std::move(rec));
  if (!st.flush_queued && !st.flushing) {
    st.flush_queued = true;
    self->send(self, flush_atom::value);
  }
}

/// Claims for `stage` once the results already in our mailbox have been
/// handled: credit freed together is claimed together.
void claim_soon(self_ptr self, const std::string& stage) {
  auto& pool = self->state.pools[stage];
  if (pool.claim_queued)
    return;
  pool.claim_queued = true;
  self->send(self, claim_atom::value, stage);
}

void handle_outcome(self_ptr self, job_state& js, outcome o, int64_t started_us = 0,
                    int64_t finished_us = 0) {
  auto& run = js.job.run;
  auto& pool = self->state.pools[run.stage];
  if (js.cancelled)
    return; // the run was cancelled in the database already
  store::outcome_record rec;
  rec.run_id = run.run_id;
  rec.attempt = run.attempt;
  rec.cost = o.cost;
  rec.started_us = started_us;
  rec.finished_us = finished_us;
  if (js.timed_out && o.kind == outcome_kind::cancelled) {
    o.kind = outcome_kind::timeout;
    o.message = "timed out after " + std::to_string(js.job.timeout.count() / 1000.0) + " s";
  }
  if (o.kind == outcome_kind::cancelled) {
    // Drain (or a runner shutdown): hand the run straight back.
    rec.kind = store::record_kind::release;
    rec.message = o.message;
    record(self, std::move(rec));
    return;
  }
  if (o.kind == outcome_kind::ok) {
    rec.kind = store::record_kind::ok;
    rec.output = std::move(o.output);
    ++pool.ok;
    record(self, std::move(rec));
    return;
  }
  auto decision = config::decide_retry(js.job.stage->retry, o.kind, run.failed_attempts + 1,
                                       o.retry_after_s, 0.0, self->state.rng);
  using act = config::retry_decision::action;
  rec.delay = decision.delay;
  rec.error_class = std::string{to_string(o.kind)};
  rec.message = o.message;
  switch (decision.act) {
    case act::retry_at:
      rec.kind = store::record_kind::retry;
      ++pool.retried;
      spdlog::info("{} task {} attempt {}: {} error, retry in {} ms: {}", run.stage, run.task_id,
                   run.attempt, rec.error_class, rec.delay.count(), rec.message);
      break;
    case act::snooze:
      rec.kind = store::record_kind::snooze;
      ++pool.retried;
      spdlog::info("{} task {}: rate limited, snoozed {} ms", run.stage, run.task_id,
                   rec.delay.count());
      break;
    case act::fail:
      rec.kind = store::record_kind::fail;
      ++pool.failed;
      spdlog::warn("{} task {} attempt {} failed for good ({}): {}", run.stage, run.task_id,
                   run.attempt, rec.error_class, rec.message);
      break;
  }
  record(self, std::move(rec));
}

void maybe_flush(self_ptr self) {
  auto& st = self->state;
  if (st.flushing || st.pending.empty())
    return;
  st.flushing = true;
  outcome_batch batch{std::move(st.pending)};
  st.pending.clear();
  self->request(st.recorder, caf::infinite, record_atom::value, st.opts.worker_id, batch)
    .then(
      [=](const recorded_batch& res) {
        self->state.flushing = false;
        for (auto& r : res.results)
          if (!r.accepted)
            spdlog::warn("outcome for run {} refused: this worker no longer holds it "
                         "(lease lost or task cancelled); state is {}",
                         r.run_id, r.state);
        maybe_flush(self);
        check_done(self);
        check_idle(self);
      },
      [=](const caf::error& err) {
        auto& s = self->state;
        s.flushing = false;
        spdlog::warn("recording {} outcomes failed, retrying: {}", batch.records.size(),
                     self->system().render(err));
        // Keep them, oldest first; leases may expire meanwhile, and the
        // fence then refuses what is stale.
        s.pending.insert(s.pending.begin(), batch.records.begin(), batch.records.end());
        self->delayed_send(self, 500ms, flush_atom::value);
      });
}

// -- claiming ------------------------------------------------------------------------

void dispatch(self_ptr self, store::claimed_run run) {
  auto& st = self->state;
  auto& pool = st.pools[run.stage];
  const auto* stage = st.config->stage(run.stage);
  if (st.draining || pool.idle.empty() || stage == nullptr) {
    store::outcome_record rec;
    rec.run_id = run.run_id;
    rec.attempt = run.attempt;
    rec.kind = store::record_kind::release;
    record(self, std::move(rec));
    return;
  }
  auto actor = std::move(pool.idle.back());
  pool.idle.pop_back();
  stage_job job;
  job.config = st.config;
  job.stage = stage;
  job.data_dir = st.opts.data_dir;
  job.timeout = stage->timeout();
  if (!stage->timeout_per.empty()) {
    boost::json::error_code ec;
    auto payload = boost::json::parse(run.payload, ec);
    if (!ec && payload.is_object())
      job.timeout = config::effective_timeout(*stage, payload.as_object());
  }
  job.run = std::move(run);
  auto run_id = job.run.run_id;
  auto attempt = job.run.attempt;
  auto timeout = job.timeout;
  st.busy[actor.address()] = run_id;
  self->send(actor, job_atom::value, job);
  st.jobs.emplace(run_id, job_state{std::move(job), actor});
  self->delayed_send(self, timeout, timeout_atom::value, run_id, attempt);
}

void maybe_claim(self_ptr self, const std::string& stage) {
  auto& st = self->state;
  auto& pool = st.pools[stage];
  if (st.draining)
    return;
  if (pool.claiming > 0) {
    pool.recheck = true;
    return;
  }
  if (!pool.more || pool.idle.empty())
    return;
  // Exactly the idle credit, never more.
  int n = static_cast<int>(
    std::min<size_t>(pool.idle.size(), static_cast<size_t>(worker(self).claim_batch_limit)));
  pool.claiming = n;
  pool.recheck = false;
  self
    ->request(st.claimer, caf::infinite, claim_atom::value, stage, n, st.opts.worker_id,
              static_cast<int64_t>(worker(self).lease().count()))
    .then(
      [=](claim_batch& batch) {
        auto& p = self->state.pools[stage];
        p.claiming = 0;
        p.more = static_cast<int>(batch.runs.size()) == n;
        for (auto& run : batch.runs)
          dispatch(self, std::move(run));
        if (p.more || p.recheck) {
          p.more = true;
          maybe_claim(self, stage);
        }
        check_done(self);
        if (batch.runs.empty())
          check_idle(self); // with --exit-when-idle, no need to wait for the poll
      },
      [=](const caf::error& err) {
        self->state.pools[stage].claiming = 0;
        spdlog::warn("claiming {} runs failed: {}", stage, self->system().render(err));
        self->delayed_send(self, 1s, wakeup_atom::value, notice{"spool_wakeup", stage});
        check_done(self);
      });
}

void claim_everywhere(self_ptr self) {
  for (auto& [stage, pool] : self->state.pools) {
    pool.more = true;
    maybe_claim(self, stage);
  }
}

// -- lifecycle -----------------------------------------------------------------------

void finish(self_ptr self) {
  auto& st = self->state;
  if (st.finishing)
    return;
  st.finishing = true;
  auto quit = [=] {
    auto& s = self->state;
    for (auto& [addr, stage] : s.stage_of)
      if (auto a = caf::actor_cast<caf::actor>(addr))
        self->send_exit(a, caf::exit_reason::user_shutdown);
    for (auto* a : {&s.claimer, &s.recorder, &s.maintainer, &s.listener})
      self->send_exit(*a, caf::exit_reason::user_shutdown);
    self->quit();
  };
  self->request(st.maintainer, 10s, stopped_atom::value, st.opts.worker_id)
    .then([=](bool) { quit(); }, [=](const caf::error&) { quit(); });
}

/// Finishes once a drain (or --exit-when-idle) has nothing left in flight.
void check_done(self_ptr self) {
  auto& st = self->state;
  if (!st.draining || !st.jobs.empty() || !st.pending.empty() || st.flushing)
    return;
  for (auto& [stage, pool] : st.pools)
    if (pool.claiming > 0)
      return;
  spdlog::info("drained: every job finished or was handed back");
  finish(self);
}

void drain(self_ptr self) {
  auto& st = self->state;
  if (st.draining)
    return;
  st.draining = true;
  spdlog::info("draining: no new claims; {} running job(s) get {} s to finish", st.jobs.size(),
               worker(self).shutdown_grace_s);
  if (!st.jobs.empty())
    self->delayed_send(self, worker(self).shutdown_grace(), grace_atom::value);
  check_done(self);
}

void check_idle(self_ptr self) {
  auto& st = self->state;
  if (!st.opts.exit_when_idle || st.draining || st.checking_idle || !st.jobs.empty()
      || !st.pending.empty() || st.flushing)
    return;
  // Claims in flight need no wait: what they take is running in the
  // database, and the check sees it.
  st.checking_idle = true;
  // Only this worker's stages: work it cannot do is another worker's.
  std::vector<std::string> stages;
  for (auto& stage : st.config->stages)
    stages.push_back(stage.name);
  self->request(st.maintainer, 30s, pending_atom::value, std::move(stages))
    .then(
      [=](bool pending) {
        auto& s = self->state;
        s.checking_idle = false;
        if (!pending && s.jobs.empty() && s.pending.empty() && !s.flushing) {
          spdlog::info("no work is ready, running or waiting on a retry: exiting");
          drain(self);
        }
      },
      [=](const caf::error&) { self->state.checking_idle = false; });
}

void log_progress(self_ptr self) {
  auto& st = self->state;
  std::string line;
  for (auto& [stage, pool] : st.pools) {
    if (!line.empty())
      line += ", ";
    line += stage + " " + std::to_string(pool.size - pool.idle.size()) + "/"
            + std::to_string(pool.size) + " (ok " + std::to_string(pool.ok) + ", retried "
            + std::to_string(pool.retried) + ", failed " + std::to_string(pool.failed) + ")";
  }
  spdlog::info("in flight: {}", line);
}

void arm(self_ptr self, duty d) {
  auto& w = worker(self);
  std::chrono::milliseconds every{0};
  switch (d) {
    case duty::heartbeat:
      every = w.heartbeat_interval();
      break;
    case duty::rescue:
      every = w.rescue_interval();
      break;
    case duty::sweep:
      every = w.stuck_sweep_interval();
      break;
    case duty::poll:
      every = w.idle_poll();
      break;
  }
  self->delayed_send(self, every, tick_atom::value, static_cast<int>(d));
}

void on_tick(self_ptr self, duty d) {
  auto& st = self->state;
  if (st.finishing)
    return;
  switch (d) {
    case duty::heartbeat:
      self
        ->request(st.maintainer, 30s, heartbeat_atom::value, st.opts.worker_id,
                  static_cast<int64_t>(worker(self).lease().count()))
        .then([](int) {},
              [=](const caf::error& e) {
                spdlog::warn("heartbeat failed: {}", self->system().render(e));
              });
      if (steady::now() - st.last_progress >= worker(self).progress_log_interval()) {
        st.last_progress = steady::now();
        log_progress(self);
      }
      break;
    case duty::rescue:
      self->request(st.maintainer, 60s, rescue_atom::value)
        .then(
          [](const maintenance_report& r) {
            if (r.rescued > 0)
              spdlog::warn("rescued {} run(s) whose worker stopped heartbeating ({} failed "
                           "past their retry limit)",
                           r.rescued, r.failed);
          },
          [=](const caf::error& e) {
            spdlog::warn("lease rescue failed: {}", self->system().render(e));
          });
      break;
    case duty::sweep: {
      std::vector<std::string> stages, per;
      std::vector<double> timeouts;
      for (auto& s : st.config->stages) {
        stages.push_back(s.name);
        timeouts.push_back(s.timeout_s);
        per.push_back(s.timeout_per);
      }
      self
        ->request(st.maintainer, 60s, sweep_atom::value, stages, timeouts, per,
                  worker(self).stuck_margin_s, worker(self).stuck_sweep_interval_s)
        .then(
          [](const maintenance_report& r) {
            if (r.stuck > 0)
              spdlog::warn("stuck-job sweep: {} run(s) ran far past their timeout; their "
                           "leases were expired for rescue",
                           r.stuck);
            if (r.stale > 0)
              spdlog::warn("stuck-job sweep: {} run(s) have waited longer than a sweep "
                           "interval to start",
                           r.stale);
          },
          [=](const caf::error& e) {
            spdlog::warn("stuck-job sweep failed: {}", self->system().render(e));
          });
      break;
    }
    case duty::poll:
      check_idle(self);
      claim_everywhere(self);
      break;
  }
  arm(self, d);
}

// -- behavior ------------------------------------------------------------------------

caf::behavior supervisor(self_ptr self, std::shared_ptr<const config::snapshot> cfg,
                         supervisor_options opts) {
  auto& st = self->state;
  st.config = std::move(cfg);
  st.opts = std::move(opts);
  st.claimer = spawn_claimer(self, st.opts.database_url);
  st.recorder = spawn_recorder(self, st.opts.database_url);
  st.maintainer = spawn_maintainer(self, st.opts.database_url);
  st.listener = spawn_listener(self, st.opts.database_url, caf::actor_cast<caf::actor>(self));
  for (auto& stage : st.config->stages)
    for (int i = 0; i < stage.max_concurrent; ++i)
      add_stage_actor(self, stage.name);

  self->set_down_handler([=](caf::down_msg& dm) {
    auto& s = self->state;
    auto it = s.stage_of.find(dm.source);
    if (it == s.stage_of.end() || s.finishing)
      return;
    auto stage = it->second;
    s.stage_of.erase(it);
    auto& pool = s.pools[stage];
    --pool.size;
    std::erase_if(pool.idle, [&](const caf::actor& a) { return a.address() == dm.source; });
    spdlog::warn("a {} stage actor died ({}); replacing it", stage,
                 self->system().render(dm.reason));
    if (auto b = s.busy.find(dm.source); b != s.busy.end()) {
      auto run_id = b->second;
      s.busy.erase(b);
      if (auto j = s.jobs.find(run_id); j != s.jobs.end()) {
        auto js = std::move(j->second);
        s.jobs.erase(j);
        outcome o;
        o.kind = outcome_kind::transient;
        o.message = "stage actor crashed: " + self->system().render(dm.reason);
        handle_outcome(self, js, std::move(o));
      }
    }
    add_stage_actor(self, stage);
    maybe_claim(self, stage);
    check_done(self);
  });

  self
    ->request(st.maintainer, 30s, register_atom::value, st.opts.worker_id,
              std::string{[] {
                char host[256] = {};
                ::gethostname(host, sizeof host - 1);
                return std::string{host};
              }()},
              static_cast<int>(::getpid()), st.config->version)
    .then([](bool) {},
          [=](const caf::error& e) {
            spdlog::error("registering the worker failed: {}", self->system().render(e));
          });
  spdlog::info("worker {} started: {} stage(s), config {}", st.opts.worker_id,
               st.config->stages.size(), st.config->version);
  claim_everywhere(self);
  for (auto d : {duty::heartbeat, duty::rescue, duty::sweep, duty::poll})
    arm(self, d);

  return {
    [=](done_atom, stage_result& r) {
      auto& s = self->state;
      auto sender = caf::actor_cast<caf::actor>(self->current_sender());
      auto stage_it = s.stage_of.find(sender.address());
      s.busy.erase(sender.address());
      std::string stage;
      if (stage_it != s.stage_of.end()) {
        stage = stage_it->second;
        s.pools[stage].idle.push_back(sender);
      }
      auto j = s.jobs.find(r.run_id);
      if (j != s.jobs.end() && j->second.job.run.attempt == r.attempt) {
        auto js = std::move(j->second);
        s.jobs.erase(j);
        handle_outcome(self, js, std::move(r.result), r.started_us, r.finished_us);
      }
      if (!stage.empty())
        claim_soon(self, stage);
      check_done(self);
    },
    [=](claim_atom, const std::string& stage) {
      self->state.pools[stage].claim_queued = false;
      maybe_claim(self, stage);
    },
    [=](timeout_atom, int64_t run_id, int attempt) {
      auto& s = self->state;
      auto j = s.jobs.find(run_id);
      if (j == s.jobs.end() || j->second.job.run.attempt != attempt || j->second.timed_out)
        return;
      j->second.timed_out = true;
      spdlog::warn("{} task {} attempt {} hit its timeout ({} ms); stopping it",
                   j->second.job.run.stage, j->second.job.run.task_id, attempt,
                   j->second.job.timeout.count());
      self->send(j->second.actor, cancel_atom::value, run_id);
    },
    [=](wakeup_atom, const notice& n) {
      auto& s = self->state;
      if (n.channel == "spool_cancel") {
        int64_t run_id = 0;
        try {
          run_id = std::stoll(n.payload);
        } catch (...) {
          return;
        }
        if (auto j = s.jobs.find(run_id); j != s.jobs.end()) {
          j->second.cancelled = true;
          spdlog::info("{} task {}: cancelled; stopping it", j->second.job.run.stage,
                       j->second.job.run.task_id);
          self->send(j->second.actor, cancel_atom::value, run_id);
        }
        return;
      }
      if (n.payload.empty()) {
        claim_everywhere(self);
        return;
      }
      if (auto p = s.pools.find(n.payload); p != s.pools.end()) {
        p->second.more = true;
        maybe_claim(self, n.payload);
      }
    },
    [=](tick_atom, int d) { on_tick(self, static_cast<duty>(d)); },
    [=](flush_atom) {
      self->state.flush_queued = false;
      maybe_flush(self);
    },
    [=](drain_atom) { drain(self); },
    [=](grace_atom) {
      auto& s = self->state;
      if (s.jobs.empty())
        return;
      spdlog::info("shutdown grace over: handing back {} running job(s)", s.jobs.size());
      for (auto& [run_id, js] : s.jobs) {
        js.releasing = true;
        self->send(js.actor, cancel_atom::value, run_id);
      }
    },
  };
}

} // namespace

caf::actor spawn_supervisor(caf::actor_system& sys, std::shared_ptr<const config::snapshot> config,
                            supervisor_options opts) {
  return sys.spawn(supervisor, std::move(config), std::move(opts));
}

} // namespace spool::actors
