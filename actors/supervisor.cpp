#include "actors/supervisor.hpp"

#include "actors/db_actors.hpp"
#include "actors/messages.hpp"
#include "actors/stage_actor.hpp"
#include "runtime/config/retry.hpp"
#include "runtime/exec/command_runner.hpp"
#include "runtime/exec/outcome_check.hpp"
#include "runtime/pg/outage.hpp"

#include <boost/json.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <unistd.h>

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

/// A claim being executed: (run id, lease token).
using job_key = std::pair<int64_t, int64_t>;

struct job_state {
  stage_job job;
  caf::actor actor;
  bool timed_out = false; // our timer fired; its cancel reads as a timeout
  bool cancelled = false; // the task was cancelled: record nothing
  bool lost = false;      // the database no longer attributes it to us: record nothing
};

struct supervisor_state {
  std::shared_ptr<const config::snapshot> config;
  supervisor_options opts;
  std::shared_ptr<pg::outage_log> outage = std::make_shared<pg::outage_log>();
  caf::actor claimer, recorder, heartbeater, maintainer, listener;
  std::map<std::string, pool_state> pools;
  std::map<job_key, job_state> jobs;
  std::map<caf::actor_addr, std::string> stage_of; // every stage actor
  std::map<caf::actor_addr, job_key> busy;         // stage actor -> its job
  std::vector<store::outcome_record> pending;      // to record
  std::vector<store::outcome_record> recording;    // the batch in flight
  bool flush_queued = false; // a (flush_atom) to ourselves is pending
  std::chrono::milliseconds flush_backoff{0};
  std::set<int64_t> claims_in_flight; // their lease tokens
  int64_t last_token = 0;
  bool heartbeating = false, registered = false, registering = false;
  bool rescuing = false, sweeping = false;
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

/// How long to wait for a database actor's answer to a request that takes
/// `calls` database calls: their client-side deadlines, and a margin.
std::chrono::milliseconds db_budget(self_ptr self, int calls = 1) {
  return config::to_duration(worker(self).db_call_timeout_s) * calls + 5s;
}

void maybe_claim(self_ptr self, const std::string& stage);
void maybe_flush(self_ptr self);
void check_done(self_ptr self);
void check_idle(self_ptr self);
void finish(self_ptr self, bool clean);

// -- stage actors ------------------------------------------------------------------

void add_stage_actor(self_ptr self, const std::string& stage) {
  auto a = spawn_stage_actor(self, self->state.opts.runner);
  self->state.stage_of[a.address()] = stage;
  auto& p = self->state.pools[stage];
  p.idle.push_back(std::move(a));
  ++p.size;
}

/// The jobs executing run `run_id`, whatever their lease token.
template <class F>
void for_each_job_of_run(self_ptr self, int64_t run_id, F&& fn) {
  auto& jobs = self->state.jobs;
  for (auto it = jobs.lower_bound({run_id, std::numeric_limits<int64_t>::min()});
       it != jobs.end() && it->first.first == run_id; ++it)
    fn(it->second);
}

// -- outcomes ----------------------------------------------------------------------

/// Queues an outcome. The flush goes through our own mailbox, behind the
/// results already waiting there, so outcomes that finish together are
/// written in one round trip.
void record(self_ptr self, store::outcome_record rec) {
  auto& st = self->state;
  st.pending.push_back(std::move(rec));
  if (!st.flush_queued && st.recording.empty()) {
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
  if (js.cancelled || js.lost)
    return; // the database no longer attributes the run to us
  auto rec = store::outcome_record::for_claim(run, store::record_kind::ok);
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
  // Nothing reaches SQL unchecked: a result that breaks a rule fails its
  // own run and never the batch it is recorded with.
  o = exec::check_outcome(std::move(o), exec::limits_of(*js.job.stage));
  rec.cost = o.cost;
  if (o.kind == outcome_kind::ok) {
    rec.output = std::move(o.output);
    ++pool.ok;
    record(self, std::move(rec));
    return;
  }
  auto decision = config::decide_retry(
    js.job.stage->retry, o.kind, run.failed_attempts + 1, o.retry_after_s,
    std::chrono::duration<double>(run.snoozed).count(), self->state.rng);
  using act = config::retry_decision::action;
  rec.delay = decision.delay;
  rec.error_class = std::string{to_string(o.kind)};
  rec.message = decision.reason.empty() ? o.message : decision.reason + "; last: " + o.message;
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
  if (!st.recording.empty() || st.pending.empty() || st.finishing)
    return;
  // At most record_batch_limit at once, oldest first.
  auto n = std::min<size_t>(st.pending.size(),
                            static_cast<size_t>(std::max(1, worker(self).record_batch_limit)));
  st.recording.assign(std::make_move_iterator(st.pending.begin()),
                      std::make_move_iterator(st.pending.begin() + static_cast<ptrdiff_t>(n)));
  st.pending.erase(st.pending.begin(), st.pending.begin() + static_cast<ptrdiff_t>(n));
  // Isolating a bad record takes about 2 log2(n) calls.
  int calls = 2;
  for (size_t k = n; k > 1; k /= 2)
    calls += 2;
  self
    ->request(st.recorder, caf::duration{db_budget(self, calls)}, record_atom::value, st.opts.worker_id,
              outcome_batch{st.recording})
    .then(
      [=](const recorded_batch& res) {
        auto& s = self->state;
        s.recording.clear();
        s.flush_backoff = 0ms;
        for (auto& r : res.results)
          if (!r.accepted && r.state != "unrecordable")
            spdlog::warn("outcome for run {} refused: this worker no longer holds it "
                         "(lease lost or task cancelled); state is {}",
                         r.run_id, r.state);
        maybe_flush(self);
        check_done(self);
        check_idle(self);
      },
      [=](const caf::error& err) {
        auto& s = self->state;
        // Keep them, oldest first, and try again with backoff; the fence
        // refuses whatever a lost lease made stale meanwhile.
        s.pending.insert(s.pending.begin(), std::make_move_iterator(s.recording.begin()),
                         std::make_move_iterator(s.recording.end()));
        s.recording.clear();
        s.flush_backoff = std::clamp<std::chrono::milliseconds>(s.flush_backoff * 2, 250ms, 5s);
        if (s.outage->down())
          spdlog::debug("recording {} outcome(s) waits for the database: {}", s.pending.size(),
                        self->system().render(err));
        else
          spdlog::warn("recording {} outcome(s) failed, retrying in {} ms: {}", s.pending.size(),
                       s.flush_backoff.count(), self->system().render(err));
        self->delayed_send(self, s.flush_backoff, flush_atom::value);
        check_done(self);
      });
}

// -- claiming ------------------------------------------------------------------------

void dispatch(self_ptr self, store::claimed_run run) {
  auto& st = self->state;
  auto& pool = st.pools[run.stage];
  const auto* stage = st.config->stage(run.stage);
  if (st.draining || pool.idle.empty() || stage == nullptr) {
    record(self, store::outcome_record::for_claim(run, store::record_kind::release));
    return;
  }
  // A run we are still executing under an older claim was handed to us
  // again (that claim was lost in a database crash): the old execution
  // holds nothing any more.
  for_each_job_of_run(self, run.run_id, [&](job_state& old) {
    if (old.lost || old.cancelled)
      return;
    old.lost = true;
    spdlog::warn("lease lost: {} task {} attempt {} was claimed again; stopping the old "
                 "execution",
                 old.job.run.stage, old.job.run.task_id, old.job.run.attempt);
    self->send(old.actor, cancel_atom::value, old.job.run.run_id);
  });
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
  job_key key{job.run.run_id, job.run.lease_token};
  auto timeout = job.timeout;
  st.busy[actor.address()] = key;
  self->send(actor, job_atom::value, job);
  st.jobs.insert_or_assign(key, job_state{std::move(job), actor});
  self->delayed_send(self, timeout, timeout_atom::value, key.first, key.second);
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
  claim_request req;
  req.stage = stage;
  req.limit = n;
  req.worker = st.opts.worker_id;
  req.lease = worker(self).lease();
  req.token = store::next_lease_token();
  auto budget = db_budget(self);
  req.deadline = steady::now() + budget;
  auto token = req.token;
  st.claims_in_flight.insert(token);
  st.last_token = std::max(st.last_token, token);
  self->request(st.claimer, caf::duration{budget}, claim_atom::value, std::move(req))
    .then(
      [=](claim_batch& batch) {
        auto& s = self->state;
        s.claims_in_flight.erase(token);
        auto& p = s.pools[stage];
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
        // If the claim committed after all, the heartbeat hands its runs back
        // (they carry a token at or below the horizon from now on).
        auto& s = self->state;
        s.claims_in_flight.erase(token);
        s.pools[stage].claiming = 0;
        if (!s.outage->down())
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

// -- heartbeat -----------------------------------------------------------------------

void register_worker(self_ptr self) {
  auto& st = self->state;
  if (st.registered || st.registering)
    return;
  st.registering = true;
  store::worker_info w;
  w.id = st.opts.worker_id;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  w.host = host;
  w.pid = static_cast<int>(::getpid());
  w.config_version = st.config->version;
  for (auto& stage : st.config->stages)
    w.stages.push_back(stage.name);
  w.lease = worker(self).lease();
  self->request(st.heartbeater, caf::duration{db_budget(self)}, register_atom::value, std::move(w))
    .then(
      [=](bool) {
        self->state.registering = false;
        self->state.registered = true;
      },
      [=](const caf::error& e) {
        // Tried again at the next heartbeat: a worker started while the
        // database is down registers once it is back.
        self->state.registering = false;
        if (!self->state.outage->down())
          spdlog::warn("registering the worker failed (trying again): {}",
                       self->system().render(e));
      });
}

void heartbeat(self_ptr self) {
  auto& st = self->state;
  register_worker(self);
  if (st.heartbeating)
    return; // the last one is still waiting for the database
  heartbeat_request req;
  req.worker = st.opts.worker_id;
  req.lease = worker(self).lease();
  for (auto& [key, js] : st.jobs)
    if (!js.lost && !js.cancelled)
      req.held.push_back({key.first, js.job.run.attempt, key.second});
  for (auto* recs : {&st.pending, &st.recording})
    for (auto& r : *recs)
      req.held.push_back({r.run_id, r.attempt, r.lease_token});
  std::sort(req.held.begin(), req.held.end());
  req.held.erase(std::unique(req.held.begin(), req.held.end()), req.held.end());
  req.horizon = st.claims_in_flight.empty() ? st.last_token : *st.claims_in_flight.begin() - 1;
  st.heartbeating = true;
  self->request(st.heartbeater, caf::duration{db_budget(self)}, heartbeat_atom::value, std::move(req))
    .then(
      [=](const heartbeat_reply& reply) {
        auto& s = self->state;
        s.heartbeating = false;
        int released = 0;
        for (auto& note : reply.notes) {
          if (note.kind == store::heartbeat_note::what::released) {
            ++released;
            continue;
          }
          auto j = s.jobs.find({note.claim.run_id, note.claim.lease_token});
          if (j == s.jobs.end() || j->second.lost || j->second.cancelled)
            continue; // its outcome is on its way: the fence decides
          auto& js = j->second;
          js.lost = true;
          spdlog::warn("lease lost: {} task {} attempt {} is no longer this worker's "
                       "(rescued, swept or re-claimed); stopping it, recording nothing",
                       js.job.run.stage, js.job.run.task_id, js.job.run.attempt);
          self->send(js.actor, cancel_atom::value, note.claim.run_id);
        }
        if (released > 0)
          spdlog::warn("handed back {} run(s) claimed for this worker that it was not running "
                       "(a claim reply was lost)",
                       released);
      },
      [=](const caf::error& e) {
        self->state.heartbeating = false;
        if (!self->state.outage->down())
          spdlog::warn("heartbeat failed: {}", self->system().render(e));
      });
}

// -- lifecycle -----------------------------------------------------------------------

/// Quits. `clean`: every job finished or was handed back, and every outcome
/// was recorded.
void finish(self_ptr self, bool clean) {
  auto& st = self->state;
  if (st.finishing)
    return;
  st.finishing = true;
  auto quit = [=] {
    auto& s = self->state;
    for (auto& [addr, stage] : s.stage_of)
      if (auto a = caf::actor_cast<caf::actor>(addr))
        self->send_exit(a, caf::exit_reason::user_shutdown);
    for (auto* a : {&s.claimer, &s.recorder, &s.heartbeater, &s.maintainer, &s.listener})
      self->send_exit(*a, caf::exit_reason::user_shutdown);
    if (clean)
      self->quit();
    else
      self->quit(caf::exit_reason::user_shutdown);
  };
  if (!clean || st.outage->down()) {
    quit();
    return;
  }
  self->request(st.heartbeater, caf::duration{2s}, stopped_atom::value, st.opts.worker_id)
    .then([=](bool) { quit(); }, [=](const caf::error&) { quit(); });
}

/// Finishes once a drain (or --exit-when-idle) has nothing left in flight.
void check_done(self_ptr self) {
  auto& st = self->state;
  if (!st.draining || !st.jobs.empty() || !st.pending.empty() || !st.recording.empty())
    return;
  for (auto& [stage, pool] : st.pools)
    if (pool.claiming > 0)
      return;
  spdlog::info("drained: every job finished or was handed back");
  finish(self, true);
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
  // Whatever the database does, the drain ends: after the grace, the
  // stopped programs' kill grace and a margin to record what they left.
  std::chrono::milliseconds kill_grace{0};
  for (auto& stage : st.config->stages)
    if (stage.executor.kind == config::executor_kind::command)
      kill_grace = std::max(kill_grace, stage.executor.command.kill_grace());
  self->delayed_send(self, worker(self).shutdown_grace() + kill_grace + 5s, stop_atom::value);
  check_done(self);
}

void check_idle(self_ptr self) {
  auto& st = self->state;
  if (!st.opts.exit_when_idle || st.draining || st.checking_idle || !st.jobs.empty()
      || !st.pending.empty() || !st.recording.empty())
    return;
  // Claims in flight need no wait: what they take is running in the
  // database, and the check sees it.
  st.checking_idle = true;
  // Only this worker's stages: work it cannot do is another worker's.
  std::vector<std::string> stages;
  for (auto& stage : st.config->stages)
    stages.push_back(stage.name);
  self->request(st.maintainer, caf::duration{db_budget(self)}, pending_atom::value, std::move(stages))
    .then(
      [=](bool pending) {
        auto& s = self->state;
        s.checking_idle = false;
        if (!pending && s.jobs.empty() && s.pending.empty() && s.recording.empty()) {
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

void rescue(self_ptr self) {
  auto& st = self->state;
  if (st.rescuing)
    return;
  st.rescuing = true;
  self->request(st.maintainer, caf::duration{db_budget(self)}, rescue_atom::value)
    .then(
      [=](const maintenance_report& r) {
        self->state.rescuing = false;
        if (r.rescued > 0)
          spdlog::warn("rescued {} run(s) whose worker stopped heartbeating ({} failed "
                       "past their lost-lease limit)",
                       r.rescued, r.failed);
      },
      [=](const caf::error& e) {
        self->state.rescuing = false;
        if (!self->state.outage->down())
          spdlog::warn("lease rescue failed: {}", self->system().render(e));
      });
}

void sweep(self_ptr self) {
  auto& st = self->state;
  if (st.sweeping)
    return;
  st.sweeping = true;
  std::vector<store::stage_limit> limits;
  for (auto& s : st.config->stages)
    limits.push_back({s.name, s.timeout_s, s.timeout_per, s.timeout_max_s, s.retry.base_s});
  self
    ->request(st.maintainer, caf::duration{db_budget(self, 2)}, sweep_atom::value, std::move(limits),
              worker(self).stuck_margin_s, worker(self).stuck_sweep_interval_s)
    .then(
      [=](const maintenance_report& r) {
        self->state.sweeping = false;
        if (r.stuck > 0)
          spdlog::warn("stuck-job sweep: rescued {} run(s) running far past their timeout "
                       "(counted as timed-out attempts)",
                       r.stuck);
        if (r.stale > 0)
          spdlog::warn("stuck-job sweep: {} run(s) have waited longer than a sweep "
                       "interval to start",
                       r.stale);
        if (r.stale_approval > 0)
          spdlog::warn("stuck-job sweep: {} task(s) have awaited approval longer than a "
                       "sweep interval",
                       r.stale_approval);
      },
      [=](const caf::error& e) {
        self->state.sweeping = false;
        if (!self->state.outage->down())
          spdlog::warn("stuck-job sweep failed: {}", self->system().render(e));
      });
}

void on_tick(self_ptr self, duty d) {
  auto& st = self->state;
  if (st.finishing)
    return;
  switch (d) {
    case duty::heartbeat:
      heartbeat(self);
      if (steady::now() - st.last_progress >= worker(self).progress_log_interval()) {
        st.last_progress = steady::now();
        log_progress(self);
      }
      break;
    case duty::rescue:
      rescue(self);
      break;
    case duty::sweep:
      sweep(self);
      break;
    case duty::poll:
      check_idle(self);
      claim_everywhere(self);
      break;
  }
  arm(self, d);
}

db_options db_options_of(const supervisor_state& st) {
  const auto& w = st.config->worker;
  db_options db;
  db.url = st.opts.database_url;
  db.outage = st.outage;
  auto& c = db.connection;
  c.connect_timeout = std::chrono::seconds{
    std::max<int64_t>(1, static_cast<int64_t>(w.db_connect_timeout_s + 0.5))};
  c.statement_timeout = config::to_duration(w.db_statement_timeout_s);
  c.lock_timeout = config::to_duration(w.db_lock_timeout_s);
  c.keepalives_idle_s = std::max(1, static_cast<int>(w.db_keepalives_idle_s + 0.5));
  c.keepalives_interval_s = std::max(1, static_cast<int>(w.db_keepalives_interval_s + 0.5));
  c.keepalives_count = w.db_keepalives_count;
  c.tcp_user_timeout = config::to_duration(w.db_tcp_user_timeout_s);
  c.call_timeout = config::to_duration(w.db_call_timeout_s);
  return db;
}

// -- behavior ------------------------------------------------------------------------

caf::behavior supervisor(self_ptr self, std::shared_ptr<const config::snapshot> cfg,
                         supervisor_options opts) {
  auto& st = self->state;
  st.config = std::move(cfg);
  st.opts = std::move(opts);
  auto db = db_options_of(st);
  st.claimer = spawn_claimer(self, db);
  st.recorder = spawn_recorder(self, db);
  st.heartbeater = spawn_heartbeater(self, db);
  st.maintainer = spawn_maintainer(self, db);
  st.listener = spawn_listener(self, db, caf::actor_cast<caf::actor>(self));
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
      auto key = b->second;
      s.busy.erase(b);
      if (auto j = s.jobs.find(key); j != s.jobs.end()) {
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

  register_worker(self);
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
      auto j = s.jobs.find({r.run_id, r.lease_token});
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
    [=](timeout_atom, int64_t run_id, int64_t token) {
      auto& s = self->state;
      auto j = s.jobs.find({run_id, token});
      if (j == s.jobs.end() || j->second.timed_out)
        return;
      j->second.timed_out = true;
      spdlog::warn("{} task {} attempt {} hit its timeout ({} ms); stopping it",
                   j->second.job.run.stage, j->second.job.run.task_id,
                   j->second.job.run.attempt, j->second.job.timeout.count());
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
        for_each_job_of_run(self, run_id, [&](job_state& js) {
          if (js.cancelled)
            return;
          js.cancelled = true;
          spdlog::info("{} task {}: cancelled; stopping it", js.job.run.stage,
                       js.job.run.task_id);
          self->send(js.actor, cancel_atom::value, run_id);
        });
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
      for (auto& [key, js] : s.jobs)
        self->send(js.actor, cancel_atom::value, key.first);
    },
    [=](stop_atom) {
      auto& s = self->state;
      if (s.finishing)
        return;
      spdlog::warn("drain deadline passed with {} job(s) running and {} outcome(s) "
                   "unrecorded (is the database answering?): exiting; their leases expire "
                   "and another worker rescues them",
                   s.jobs.size(), s.pending.size() + s.recording.size());
      if (s.opts.runner)
        s.opts.runner->kill_all_now(); // no stage program outlives us
      finish(self, false);
    },
  };
}

} // namespace

caf::actor spawn_supervisor(caf::actor_system& sys, std::shared_ptr<const config::snapshot> config,
                            supervisor_options opts) {
  return sys.spawn(supervisor, std::move(config), std::move(opts));
}

} // namespace spool::actors
