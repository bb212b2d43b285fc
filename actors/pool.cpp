#include "actors/pool.hpp"

#include "actors/messages.hpp"
#include "actors/stage_actor.hpp"
#include "actors/trace.hpp"
#include "runtime/config/retry.hpp"
#include "runtime/exec/outcome_check.hpp"
#include "runtime/logging.hpp"
#include "runtime/pg/outage.hpp"
#include "runtime/worker_metrics.hpp"

#include <boost/json/parse.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <utility>

namespace spool::actors {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

/// A claim being executed: (run id, lease token).
using job_key = std::pair<int64_t, int64_t>;

struct job_state {
  stage_job job;
  caf::actor actor;
  bool timed_out = false; // our timer fired; its cancel reads as a timeout
  bool cancelled = false; // the task was cancelled: record nothing
  bool lost = false;      // the database no longer attributes it to us: record nothing
};

struct pool_state {
  pool_options opts;
  caf::actor parent; // gets (idle_atom) and (drained_atom)
  std::shared_ptr<const config::snapshot> config;
  const config::stage_config* stage = nullptr; // into *config; null once it left
  std::vector<caf::actor> idle;
  std::set<caf::actor_addr> members;         // every stage actor we keep
  std::map<caf::actor_addr, job_key> busy;   // stage actor -> its job
  std::map<job_key, job_state> jobs;
  std::vector<store::outcome_record> outgoing; // to hand to the writer
  int claiming = 0;        // runs asked for by the claim in flight
  int64_t claim_token = 0; // its lease token
  bool more = true;        // the queue may hold ready runs for this stage
  bool recheck = false;    // woken while a claim was in flight
  bool claim_queued = false;
  std::string held_back; // why provider limits or budgets held the last claim back
  bool retry_armed = false; // a (retry_atom) for a held-back claim is pending
  bool draining = false; // the worker stops
  bool retiring = false; // the stage left the configuration
  bool reported_drained = false;
  uint64_t poll_generation = 0;
  uint64_t ok = 0, failed = 0, retried = 0;
  worker_metrics::stage_meters meters; // all null without metrics
  std::map<std::string, worker_metrics::provider_meters> provider_meters; // by provider
  std::mt19937_64 rng{std::random_device{}()};
  static inline const char* name = "stage_pool";
};

using self_ptr = caf::stateful_actor<pool_state>*;

const config::worker_config& worker(self_ptr self) {
  return self->state.config->worker;
}

/// The number of stage actors the pool keeps.
size_t target(const pool_state& st) {
  if (st.draining || st.retiring || st.stage == nullptr)
    return 0;
  return static_cast<size_t>(st.stage->max_concurrent);
}

void maybe_claim(self_ptr self);
void check_drained(self_ptr self);

// -- stage actors ------------------------------------------------------------------

void retire(self_ptr self, const caf::actor& a) {
  self->state.members.erase(a.address());
  self->send_exit(a, caf::exit_reason::user_shutdown);
}

/// Grows to the target at once; shrinks by the idle actors only (busy ones
/// are retired when their job ends).
void resize(self_ptr self) {
  auto& st = self->state;
  auto want = target(st);
  while (st.members.size() < want) {
    auto a = spawn_stage_actor(self, st.opts.runner);
    st.members.insert(a.address());
    st.idle.push_back(std::move(a));
  }
  while (st.members.size() > want && !st.idle.empty()) {
    retire(self, st.idle.back());
    st.idle.pop_back();
  }
  if (st.meters.pool_size != nullptr)
    st.meters.pool_size->set(static_cast<double>(want));
}

/// Updates the in-flight gauge after the job set changed.
void count_in_flight(pool_state& st) {
  if (st.meters.in_flight != nullptr)
    st.meters.in_flight->set(static_cast<double>(st.jobs.size()));
}

/// The jobs executing run `run_id`, whatever their lease token.
template <class F>
void for_each_job_of_run(self_ptr self, int64_t run_id, F&& fn) {
  auto& jobs = self->state.jobs;
  for (auto it = jobs.lower_bound({run_id, std::numeric_limits<int64_t>::min()});
       it != jobs.end() && it->first.first == run_id; ++it)
    fn(it->second);
}

void stop_job(self_ptr self, job_state& js) {
  self->send(js.actor, cancel_atom::value, js.job.run.run_id);
}

// -- outcomes ----------------------------------------------------------------------

/// Queues an outcome for the writer. The hand-over goes through our own
/// mailbox, behind the results already waiting there, so outcomes that
/// finish together travel (and are recorded) together.
void record(self_ptr self, store::outcome_record rec) {
  auto& st = self->state;
  st.outgoing.push_back(std::move(rec));
  if (st.outgoing.size() == 1)
    self->send(self, flush_atom::value);
}

/// Logs event `name` of the job running `run`: its task, run, stage,
/// attempt, provider and this worker, then `extra`; the text is made (by
/// `text()`) only when the level logs.
template <class F>
void job_event(self_ptr self, const store::claimed_run& run, spdlog::level::level_enum level,
               std::string_view name, std::initializer_list<event_field> extra, F&& text) {
  if (!spdlog::should_log(level))
    return;
  std::vector<event_field> fields{{"task_id", run.task_id},   {"run_id", run.run_id},
                                  {"stage", run.stage},       {"attempt", run.attempt},
                                  {"provider", run.provider}, {"worker", self->state.opts.worker_id}};
  fields.insert(fields.end(), extra.begin(), extra.end());
  log_event(level, name, fields, text());
}

/// Counts an attempt that reached an outcome, and logs it as `completed`
/// when it succeeded.
void observe(self_ptr self, const job_state& js, const outcome& o, int64_t started_us,
             int64_t finished_us) {
  auto& st = self->state;
  const auto& run = js.job.run;
  double seconds = started_us > 0 && finished_us >= started_us
                     ? static_cast<double>(finished_us - started_us) / 1e6
                     : 0;
  if (st.opts.metrics) {
    auto pm = st.provider_meters.find(run.provider);
    if (pm == st.provider_meters.end())
      pm = st.provider_meters
             .emplace(run.provider, st.opts.metrics->provider(run.stage, run.provider))
             .first;
    st.opts.metrics->attempt_finished(st.meters, pm->second, run.stage, to_string(o.kind),
                                      seconds, o.cost);
  }
  if (o.kind == outcome_kind::ok)
    job_event(self, run, spdlog::level::info, "completed",
              {{"duration_s", seconds}, {"cost", o.cost}}, [&] {
                return fmt::format("{} task {} attempt {}: completed in {:.3f} s", run.stage,
                                   run.task_id, run.attempt, seconds);
              });
}

void handle_outcome(self_ptr self, job_state& js, outcome o, int64_t started_us = 0,
                    int64_t finished_us = 0) {
  auto& st = self->state;
  auto& run = js.job.run;
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
  // own run and never the batch it is recorded with. The job's own settings
  // decide, whatever the configuration says now.
  const auto& stage = *js.job.stage;
  o = exec::check_outcome(std::move(o), exec::limits_of(stage));
  rec.cost = o.cost;
  observe(self, js, o, started_us, finished_us);
  if (o.kind == outcome_kind::ok) {
    rec.output = std::move(o.output);
    ++st.ok;
    record(self, std::move(rec));
    return;
  }
  auto policy = stage.retry;
  policy.max_retries = run.max_retries; // fixed when the task was enqueued
  auto decision = config::decide_retry(policy, o.kind, run.failed_attempts + 1, o.retry_after_s,
                                       std::chrono::duration<double>(run.snoozed).count(),
                                       st.rng);
  using act = config::retry_decision::action;
  rec.delay = decision.delay;
  rec.error_class = std::string{to_string(o.kind)};
  rec.message = decision.reason.empty() ? o.message : decision.reason + "; last: " + o.message;
  auto event = [&](spdlog::level::level_enum level, std::string_view name, auto text) {
    job_event(self, run, level, name,
              {{"error_class", rec.error_class},
               {"retry_in_s", static_cast<double>(rec.delay.count()) / 1000},
               {"error", rec.message}},
              text);
  };
  switch (decision.act) {
    case act::retry_at:
      rec.kind = store::record_kind::retry;
      ++st.retried;
      if (st.meters.retries != nullptr)
        st.meters.retries->inc();
      event(spdlog::level::info, "retry_scheduled", [&] {
        return fmt::format("{} task {} attempt {}: {} error, retry in {} ms: {}", run.stage,
                           run.task_id, run.attempt, rec.error_class, rec.delay.count(),
                           rec.message);
      });
      break;
    case act::snooze:
      rec.kind = store::record_kind::snooze;
      ++st.retried;
      if (st.meters.retries != nullptr)
        st.meters.retries->inc();
      event(spdlog::level::info, "retry_scheduled", [&] {
        return fmt::format("{} task {}: rate limited, snoozed {} ms", run.stage, run.task_id,
                           rec.delay.count());
      });
      break;
    case act::fail:
      rec.kind = store::record_kind::fail;
      ++st.failed;
      if (st.meters.failed != nullptr)
        st.meters.failed->inc();
      event(spdlog::level::warn, "failed", [&] {
        return fmt::format("{} task {} attempt {} failed for good ({}): {}", run.stage,
                           run.task_id, run.attempt, rec.error_class, rec.message);
      });
      break;
  }
  record(self, std::move(rec));
}

// -- claiming ------------------------------------------------------------------------

std::chrono::milliseconds timeout_of(const config::stage_config& stage,
                                     const store::claimed_run& run) {
  if (stage.timeout_per.empty())
    return stage.timeout();
  boost::json::error_code ec;
  auto payload = boost::json::parse(run.payload, ec);
  if (!ec && payload.is_object())
    return config::effective_timeout(stage, payload.as_object());
  return stage.timeout();
}

void lease_lost(self_ptr self, const job_state& js, std::string_view what) {
  auto& st = self->state;
  const auto& run = js.job.run;
  if (st.meters.leases_lost != nullptr)
    st.meters.leases_lost->inc();
  job_event(self, run, spdlog::level::warn, "lease_lost", {}, [&] {
    return fmt::format("lease lost: {} task {} attempt {} {}", run.stage, run.task_id,
                       run.attempt, what);
  });
}

void dispatch(self_ptr self, store::claimed_run run) {
  auto& st = self->state;
  if (st.draining || st.retiring || st.idle.empty() || st.stage == nullptr) {
    // The pool shrank (or stops) while the claim was in flight.
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
    lease_lost(self, old, "was claimed again; stopping the old execution");
    stop_job(self, old);
  });
  auto actor = std::move(st.idle.back());
  st.idle.pop_back();
  stage_job job;
  job.config = st.config;
  job.stage = st.stage;
  // Admitted by the fallback provider: its executor runs the call.
  job.executor = !st.stage->fallback_provider.empty() && run.provider == st.stage->fallback_provider
                   ? &st.stage->fallback_executor
                   : &st.stage->executor;
  job.data_dir = st.opts.data_dir;
  job.timeout = timeout_of(*st.stage, run);
  job.run = std::move(run);
  job_key key{job.run.run_id, job.run.lease_token};
  auto timeout = job.timeout;
  if (st.meters.claimed != nullptr)
    st.meters.claimed->inc();
  job_event(self, job.run, spdlog::level::debug, "claimed", {}, [&] {
    return fmt::format("{} task {} attempt {}: claimed{}{}", job.run.stage, job.run.task_id,
                       job.run.attempt, job.run.provider.empty() ? "" : " for ",
                       job.run.provider);
  });
  st.busy[actor.address()] = key;
  self->send(actor, job_atom::value, job);
  st.jobs.insert_or_assign(key, job_state{std::move(job), actor});
  count_in_flight(st);
  self->delayed_send(self, timeout, timeout_atom::value, key.first, key.second);
}

/// Claims once the results already in our mailbox have been handled:
/// credit freed together is claimed together.
void claim_soon(self_ptr self) {
  auto& st = self->state;
  if (st.claim_queued)
    return;
  st.claim_queued = true;
  self->send(self, claim_atom::value);
}

void maybe_idle(self_ptr self) {
  auto& st = self->state;
  if (st.opts.exit_when_idle && st.jobs.empty() && st.claiming == 0)
    self->send(st.parent, idle_atom::value, st.opts.stage);
}

void maybe_claim(self_ptr self) {
  auto& st = self->state;
  if (st.draining || st.retiring || st.stage == nullptr)
    return;
  if (st.claiming > 0) {
    st.recheck = true;
    return;
  }
  if (!st.more || st.idle.empty())
    return;
  // Exactly the idle credit, never more.
  int n = static_cast<int>(
    std::min<size_t>(st.idle.size(), static_cast<size_t>(worker(self).claim_batch_limit)));
  st.claiming = n;
  st.recheck = false;
  claim_request req;
  req.stage = st.opts.stage;
  req.provider = st.stage->provider;
  req.fallback = st.stage->fallback_provider;
  req.limit = n;
  req.worker = st.opts.worker_id;
  req.lease = worker(self).lease();
  req.token = store::next_lease_token();
  auto budget = db_budget(worker(self));
  req.deadline = steady::now() + budget;
  st.claim_token = req.token;
  trace_step("claim", st.opts.stage);
  auto asked = steady::now();
  self->request(st.opts.claimer, caf::duration{budget}, claim_atom::value, std::move(req))
    .then(
      [=](claim_batch& batch) {
        auto& s = self->state;
        if (s.meters.claim_duration != nullptr)
          s.meters.claim_duration->observe(
            std::chrono::duration<double>(steady::now() - asked).count());
        s.claiming = 0;
        s.claim_token = 0;
        s.more = static_cast<int>(batch.runs.size()) == n;
        for (auto& run : batch.runs) {
          trace_step("claimed", run.run_id);
          dispatch(self, std::move(run));
        }
        if (!batch.held_back.empty()) {
          // The provider's limits or the budgets admit nothing more now:
          // claim again when they may (a token, the end of a pause or
          // cooldown, a new quota window or budget day), or when one of its
          // calls ends or a reservation comes back (a NOTIFY wakes us).
          s.more = false;
          if (s.held_back != batch.held_back)
            spdlog::debug("{}: limits hold claims back: {}", s.opts.stage, batch.held_back);
          if (batch.wait && !s.retry_armed) {
            s.retry_armed = true;
            self->delayed_send(self, std::max(*batch.wait, std::chrono::milliseconds{1}),
                               retry_atom::value);
          }
        }
        s.held_back = std::move(batch.held_back);
        if (s.more || s.recheck) {
          s.more = true;
          maybe_claim(self);
        }
        if (batch.runs.empty())
          maybe_idle(self);
        check_drained(self);
      },
      [=](const caf::error& err) {
        // If the claim committed after all, the heartbeat hands its runs back
        // (its token is at or below the heartbeat's horizon from now on).
        auto& s = self->state;
        s.claiming = 0;
        s.claim_token = 0;
        if (!s.opts.outage->down())
          spdlog::warn("claiming {} runs failed: {}", s.opts.stage, self->system().render(err));
        self->delayed_send(self, 1s, wakeup_atom::value);
        check_drained(self);
      });
}

void arm_poll(self_ptr self) {
  self->delayed_send(self, worker(self).idle_poll(), tick_atom::value,
                     self->state.poll_generation);
}

// -- lifecycle -----------------------------------------------------------------------

void check_drained(self_ptr self) {
  auto& st = self->state;
  if ((!st.draining && !st.retiring) || st.reported_drained || !st.jobs.empty()
      || st.claiming > 0)
    return;
  st.reported_drained = true;
  self->send(st.parent, drained_atom::value, st.opts.stage);
}

void apply(self_ptr self, std::shared_ptr<const config::snapshot> next) {
  auto& st = self->state;
  auto poll_before = worker(self).idle_poll();
  st.config = std::move(next);
  st.stage = st.config->stage(st.opts.stage);
  if (st.stage == nullptr && !st.retiring) {
    st.retiring = true;
    spdlog::info("stage {} left the configuration: its pool takes no new work; {} running "
                 "job(s) finish",
                 st.opts.stage, st.jobs.size());
  }
  resize(self);
  if (worker(self).idle_poll() != poll_before) {
    ++st.poll_generation;
    arm_poll(self);
  }
  st.more = true;
  maybe_claim(self);
  check_drained(self);
}

void on_stage_actor_down(self_ptr self, const caf::down_msg& dm) {
  auto& st = self->state;
  auto busy = st.busy.find(dm.source);
  std::optional<job_key> key;
  if (busy != st.busy.end()) {
    key = busy->second;
    st.busy.erase(busy);
  }
  if (st.members.erase(dm.source) == 0)
    return; // retired on purpose
  std::erase_if(st.idle, [&](const caf::actor& a) { return a.address() == dm.source; });
  spdlog::warn("a {} stage actor died ({}); replacing it", st.opts.stage,
               self->system().render(dm.reason));
  if (key) {
    if (auto j = st.jobs.find(*key); j != st.jobs.end()) {
      auto js = std::move(j->second);
      st.jobs.erase(j);
      count_in_flight(st);
      outcome o;
      o.kind = outcome_kind::transient;
      o.message = "stage actor crashed: " + self->system().render(dm.reason);
      handle_outcome(self, js, std::move(o));
    }
  }
  resize(self);
  maybe_claim(self);
  check_drained(self);
}

caf::behavior pool(self_ptr self, caf::actor parent, std::shared_ptr<const config::snapshot> cfg,
                   pool_options opts) {
  auto& st = self->state;
  st.parent = std::move(parent);
  st.opts = std::move(opts);
  st.config = std::move(cfg);
  st.stage = st.config->stage(st.opts.stage);
  if (st.opts.metrics)
    st.meters = st.opts.metrics->stage(st.opts.stage);
  self->set_down_handler([=](caf::down_msg& dm) { on_stage_actor_down(self, dm); });
  resize(self);
  maybe_claim(self);
  arm_poll(self);
  return {
    [=](done_atom, stage_result& r) {
      auto& s = self->state;
      auto sender = caf::actor_cast<caf::actor>(self->current_sender());
      s.busy.erase(sender.address());
      if (s.members.count(sender.address()) != 0) {
        if (s.members.size() > target(s))
          retire(self, sender); // the pool shrank while it worked
        else
          s.idle.push_back(sender);
      }
      auto j = s.jobs.find({r.run_id, r.lease_token});
      if (j != s.jobs.end() && j->second.job.run.attempt == r.attempt) {
        auto js = std::move(j->second);
        s.jobs.erase(j);
        count_in_flight(s);
        handle_outcome(self, js, std::move(r.result), r.started_us, r.finished_us);
      }
      claim_soon(self);
      check_drained(self);
    },
    [=](claim_atom) {
      self->state.claim_queued = false;
      maybe_claim(self);
    },
    [=](flush_atom) {
      auto& s = self->state;
      if (!s.outgoing.empty())
        self->send(s.opts.outcomes, record_atom::value, std::exchange(s.outgoing, {}));
    },
    [=](wakeup_atom) {
      self->state.more = true;
      maybe_claim(self);
    },
    [=](retry_atom) {
      self->state.retry_armed = false;
      self->state.more = true;
      maybe_claim(self);
    },
    [=](tick_atom, uint64_t generation) {
      auto& s = self->state;
      if (generation != s.poll_generation)
        return;
      s.more = true;
      maybe_claim(self);
      arm_poll(self);
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
      stop_job(self, j->second);
    },
    [=](cancel_atom, int64_t run_id) {
      for_each_job_of_run(self, run_id, [&](job_state& js) {
        if (js.cancelled)
          return;
        js.cancelled = true;
        spdlog::info("{} task {}: cancelled; stopping it", js.job.run.stage, js.job.run.task_id);
        stop_job(self, js);
      });
    },
    [=](lost_atom, const store::held_claim& c) {
      auto& s = self->state;
      auto j = s.jobs.find({c.run_id, c.lease_token});
      if (j == s.jobs.end() || j->second.lost || j->second.cancelled)
        return; // its outcome is on its way: the fence decides
      auto& js = j->second;
      js.lost = true;
      lease_lost(self, js,
                 "is no longer this worker's (rescued, swept or re-claimed); stopping it, "
                 "recording nothing");
      stop_job(self, js);
    },
    [=](held_atom) {
      auto& s = self->state;
      held_report r;
      for (auto& [key, js] : s.jobs)
        if (!js.lost && !js.cancelled)
          r.held.push_back({key.first, js.job.run.attempt, key.second});
      for (auto& rec : s.outgoing)
        r.held.push_back({rec.run_id, rec.attempt, rec.lease_token});
      if (s.claiming > 0)
        r.claims_in_flight.push_back(s.claim_token);
      return r;
    },
    [=](stats_atom) {
      auto& s = self->state;
      pool_stats r;
      r.stage = s.opts.stage;
      r.size = static_cast<int>(s.members.size());
      r.busy = static_cast<int>(s.jobs.size());
      r.claiming = s.claiming;
      r.ok = s.ok;
      r.failed = s.failed;
      r.retried = s.retried;
      r.retiring = s.retiring;
      r.held_back = s.held_back;
      return r;
    },
    [=](config_atom, std::shared_ptr<const config::snapshot>& next) {
      apply(self, std::move(next));
      return true;
    },
    [=](drain_atom) {
      auto& s = self->state;
      if (s.draining)
        return;
      s.draining = true;
      resize(self); // idle actors go now, busy ones when their job ends
      if (!s.jobs.empty())
        self->delayed_send(self, worker(self).shutdown_grace(), grace_atom::value);
      check_drained(self);
    },
    [=](grace_atom) {
      auto& s = self->state;
      if (s.jobs.empty())
        return;
      spdlog::info("shutdown grace over: handing back {} running {} job(s)", s.jobs.size(),
                   s.opts.stage);
      for (auto& [key, js] : s.jobs)
        stop_job(self, js);
    },
  };
}

} // namespace

caf::actor spawn_pool(caf::local_actor* parent, std::shared_ptr<const config::snapshot> config,
                      pool_options opts) {
  return parent->spawn<caf::monitored>(pool, caf::actor_cast<caf::actor>(parent),
                                       std::move(config), std::move(opts));
}

} // namespace spool::actors
