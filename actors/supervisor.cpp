#include "actors/supervisor.hpp"

#include "actors/config_source.hpp"
#include "actors/db_actors.hpp"
#include "actors/gather.hpp"
#include "actors/lease_keeper.hpp"
#include "actors/maintenance.hpp"
#include "actors/messages.hpp"
#include "actors/outcome_writer.hpp"
#include "actors/pool.hpp"
#include "runtime/exec/command_runner.hpp"
#include "runtime/logging.hpp"
#include "runtime/pg/outage.hpp"
#include "runtime/worker_metrics.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <utility>
#include <map>

namespace spool::actors {

using namespace std::chrono_literals;

namespace {

struct supervisor_state {
  std::shared_ptr<const config::snapshot> config;
  int64_t stored_version = 0;
  supervisor_options opts;
  std::shared_ptr<pg::outage_log> outage = std::make_shared<pg::outage_log>();
  // Database actors, one connection each.
  caf::actor claimer, recorder, heartbeater, maintainer, listener;
  // Duties.
  caf::actor outcomes, leases, maintenance, source;
  std::map<std::string, caf::actor> pools;       // by stage, the configured ones
  std::map<caf::actor_addr, caf::actor> retiring; // pools whose stage left
  bool draining = false;
  bool finishing = false;
  bool checking_idle = false;
  // Provider limits being written to the database, and what waits for it.
  bool syncing = false;
  std::shared_ptr<const config::snapshot> sync_target;
  std::vector<std::function<void()>> after_sync;
  uint64_t progress_generation = 0; // of the progress log timer
  static inline const char* name = "supervisor";
};

using self_ptr = caf::stateful_actor<supervisor_state>*;

const config::worker_config& worker(self_ptr self) {
  return self->state.config->worker;
}

/// Every pool that may hold work.
std::vector<caf::actor> all_pools(self_ptr self) {
  std::vector<caf::actor> out;
  for (auto& [stage, p] : self->state.pools)
    out.push_back(p);
  for (auto& [addr, p] : self->state.retiring)
    out.push_back(p);
  return out;
}

void announce_pools(self_ptr self) {
  auto& st = self->state;
  pool_set ps{all_pools(self), st.pools};
  self->send(st.leases, pools_atom::value, ps);
  if (st.listener)
    self->send(st.listener, pools_atom::value, std::move(ps));
}

void add_pool(self_ptr self, const std::string& stage) {
  auto& st = self->state;
  pool_options po;
  po.stage = stage;
  po.worker_id = st.opts.worker_id;
  po.data_dir = st.opts.data_dir;
  po.exit_when_idle = st.opts.exit_when_idle;
  po.claimer = st.claimer;
  po.outcomes = st.outcomes;
  po.runner = st.opts.runner;
  po.outage = st.outage;
  po.metrics = st.opts.metrics;
  st.pools[stage] = spawn_pool(self, st.config, std::move(po));
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
    for (auto& p : all_pools(self))
      self->send_exit(p, caf::exit_reason::user_shutdown);
    for (auto* a : {&s.source, &s.maintenance, &s.leases, &s.outcomes, &s.claimer, &s.recorder,
                    &s.heartbeater, &s.maintainer, &s.listener})
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
  auto stopped = [=] {
    self->request(self->state.leases, caf::duration{3s}, stopped_atom::value)
      .then([=](bool) { quit(); }, [=](const caf::error&) { quit(); });
  };
  self->request(st.maintenance, caf::duration{3s}, events_atom::value)
    .then([=](bool) { stopped(); }, [=](const caf::error&) { stopped(); });
}

/// Once every pool drained: waits for the last outcomes to be recorded.
void check_drained(self_ptr self) {
  auto& st = self->state;
  if (!st.draining || st.finishing || !st.pools.empty() || !st.retiring.empty())
    return;
  self->request(st.outcomes, caf::infinite, drain_atom::value)
    .then(
      [=](bool) {
        spdlog::info("drained: every job finished or was handed back");
        finish(self, true);
      },
      [=](const caf::error&) { finish(self, false); });
}

void drain(self_ptr self) {
  auto& st = self->state;
  if (st.draining)
    return;
  st.draining = true;
  if (st.opts.metrics)
    st.opts.metrics->draining(true);
  spdlog::info("draining: no new claims; running jobs get {} s to finish",
               worker(self).shutdown_grace_s);
  for (auto& p : all_pools(self))
    self->send(p, drain_atom::value);
  // Whatever the database does, the drain ends: after the grace, the
  // stopped programs' kill grace and a margin to record what they left.
  std::chrono::milliseconds kill_grace{0};
  for (auto& stage : st.config->stages)
    if (stage.executor.kind == config::executor_kind::command)
      kill_grace = std::max(kill_grace, stage.executor.command.kill_grace());
  self->delayed_send(self, worker(self).shutdown_grace() + kill_grace + 5s, stop_atom::value);
  check_drained(self);
}

/// With --exit-when-idle: drains once no pool runs or claims anything, no
/// outcome waits to be recorded and the database has no work for our
/// stages that is ready, running or waiting on a retry.
void check_idle(self_ptr self) {
  auto& st = self->state;
  if (!st.opts.exit_when_idle || st.draining || st.checking_idle)
    return;
  st.checking_idle = true;
  auto not_idle = [=] { self->state.checking_idle = false; };
  gather<pool_stats>(
    self, all_pools(self), caf::duration{5s},
    [=](std::vector<std::pair<caf::actor, pool_stats>> stats) {
      for (auto& [p, s] : stats)
        if (s.busy > 0)
          return not_idle();
      self->request(self->state.outcomes, caf::duration{5s}, stats_atom::value)
        .then(
          [=](int64_t unrecorded) {
            if (unrecorded > 0)
              return not_idle();
            // Claims in flight need no wait: what they take is running in
            // the database, and the check sees it. Only this worker's
            // stages: work it cannot do is another worker's.
            std::vector<std::string> stages;
            for (auto& stage : self->state.config->stages)
              stages.push_back(stage.name);
            self
              ->request(self->state.maintainer, caf::duration{db_budget(worker(self))},
                        pending_atom::value, std::move(stages))
              .then(
                [=](bool pending) {
                  self->state.checking_idle = false;
                  if (!pending) {
                    spdlog::info("no work is ready, running or waiting on a retry: exiting");
                    drain(self);
                  }
                },
                [=](const caf::error&) { not_idle(); });
          },
          [=](const caf::error&) { not_idle(); });
    },
    stats_atom::value);
}

void log_progress(self_ptr self) {
  gather<pool_stats>(
    self, all_pools(self), caf::duration{5s},
    [](std::vector<std::pair<caf::actor, pool_stats>> stats) {
      std::sort(stats.begin(), stats.end(),
                [](auto& a, auto& b) { return a.second.stage < b.second.stage; });
      std::string line;
      for (auto& [p, s] : stats) {
        if (!line.empty())
          line += ", ";
        line += s.stage + " " + std::to_string(s.busy) + "/" + std::to_string(s.size) + " (ok "
                + std::to_string(s.ok) + ", retried " + std::to_string(s.retried) + ", failed "
                + std::to_string(s.failed) + (s.retiring ? ", leaving" : "")
                + (s.held_back.empty() ? "" : ", held back: " + s.held_back) + ")";
      }
      spdlog::info("in flight: {}", line);
    },
    stats_atom::value);
}

// -- configuration -------------------------------------------------------------------

/// Writes the provider limits and budgets of `cfg` to the database (claims
/// of a provider the database does not know fail), then runs `then`. While the
/// database refuses, tries again every second; `then`s run in order.
void after_providers_synced(self_ptr self, std::shared_ptr<const config::snapshot> cfg,
                            std::function<void()> then) {
  auto& st = self->state;
  st.sync_target = std::move(cfg);
  st.after_sync.push_back(std::move(then));
  if (!st.syncing) {
    st.syncing = true;
    self->send(self, sync_atom::value);
  }
}

void sync_providers(self_ptr self) {
  auto& st = self->state;
  auto target = st.sync_target;
  self
    ->request(st.maintainer, caf::duration{db_budget(worker(self))}, sync_atom::value,
              config::providers_json(*target), config::budgets_json(*target))
    .then(
      [=](bool) {
        auto& s = self->state;
        if (s.sync_target != target) { // a newer one came meanwhile
          self->send(self, sync_atom::value);
          return;
        }
        s.syncing = false;
        for (auto& fn : std::exchange(s.after_sync, {}))
          fn();
      },
      [=](const caf::error& e) {
        if (!self->state.outage->down())
          spdlog::warn("writing the provider limits and budgets failed (trying again in 1 s; "
                       "stages behind a provider claim nothing until then): {}",
                       self->system().render(e));
        self->delayed_send(self, 1s, sync_atom::value);
      });
}


void record_applied(self_ptr self, std::vector<std::string> restart_pending) {
  auto& st = self->state;
  if (st.opts.metrics)
    st.opts.metrics->config_applied(st.config, st.stored_version);
  self->send(st.leases, applied_atom::value,
             applied_config{st.opts.worker_id, st.config->version, st.stored_version, epoch_us(),
                            std::move(restart_pending)});
}

/// Applies a new configuration: settings that can change live go to every
/// actor that uses them; the others are reported and kept.
void apply(self_ptr self, const config_update& u) {
  auto& st = self->state;
  if (st.draining) {
    spdlog::info("configuration from {} ignored: the worker is draining", u.reason);
    return;
  }
  auto changes = config::diff(*st.config, *u.config);
  std::vector<std::string> restart;
  std::string applied;
  for (auto& c : changes) {
    if (c.effect == config::change_effect::restart) {
      restart.push_back(c.key);
      continue;
    }
    applied += applied.empty() ? "" : "; ";
    if (c.key.back() == ']') // a whole stage: its pool starts or drains
      applied += c.key + (c.before == "(none)" ? " added" : " removed");
    else
      applied += c.key + " " + c.before + " -> " + c.after
                 + (c.effect == config::change_effect::new_tasks
                      ? " (for tasks enqueued from now on)"
                      : "");
  }
  std::string kept;
  for (auto& k : restart)
    kept += (kept.empty() ? "" : ", ") + k;
  auto before = st.config;
  auto next = std::make_shared<const config::snapshot>(config::keep_restart_only(*before, *u.config));
  // A rule across keys may break when restart-only values stay (a new
  // db_call_timeout_s below the running db_statement_timeout_s).
  if (auto checked = config::validate(*next); !checked.ok()) {
    if (st.opts.metrics)
      st.opts.metrics->config_reload("refused");
    spdlog::error("configuration_refused ({}): with the running values of what needs a restart "
                  "({}), it has {} problem(s); the configuration in force stays: {}",
                  u.reason, kept.empty() ? "none" : kept,
                  checked.problems.size(), config::to_string(checked.problems));
    return;
  }
  st.config = next;
  st.stored_version = u.stored_version;
  if (changes.empty()) {
    if (st.opts.metrics)
      st.opts.metrics->config_reload("unchanged");
    spdlog::info("configuration unchanged ({}): version {}", u.reason, next->version);
    record_applied(self, {});
    return;
  }
  if (!restart.empty())
    spdlog::warn("configuration_restart_required ({}): {} need(s) a restart to change; kept "
                 "at the running values",
                 u.reason, kept);
  if (st.opts.metrics)
    st.opts.metrics->config_reload("applied");
  log_event(spdlog::level::info, "configuration_reloaded",
            {{"reason", u.reason},
             {"worker", st.opts.worker_id},
             {"from_version", before->version},
             {"to_version", next->version},
             {"stored_version", u.stored_version},
             {"changes", applied},
             {"restart_required", kept}},
            fmt::format("configuration_reloaded ({}): version {} -> {}: {}", u.reason,
                        before->version, next->version,
                        applied.empty() ? "no live change" : applied));
  for (auto* a : {&st.outcomes, &st.leases, &st.maintenance})
    self->send(*a, config_atom::value, next);
  if (next->worker.db_call_timeout_s != before->worker.db_call_timeout_s) {
    auto ms = static_cast<int64_t>(next->worker.db_call_timeout().count());
    for (auto* a : {&st.claimer, &st.recorder, &st.heartbeater, &st.maintainer})
      self->send(*a, config_atom::value, ms);
  }
  if (next->worker.progress_log_interval() != before->worker.progress_log_interval())
    self->delayed_send(self, next->worker.progress_log_interval(), tick_atom::value,
                       ++st.progress_generation);
  // Pools, once the database has the providers' limits: the configured
  // ones take the new settings (and drain when their stage left); new
  // stages get a pool.
  after_providers_synced(self, next, [=] {
    auto& s = self->state;
    if (s.draining || s.finishing)
      return;
    std::vector<caf::actor> told; // the pools that had a configuration before
    for (auto it = s.pools.begin(); it != s.pools.end();) {
      told.push_back(it->second);
      if (next->stage(it->first) == nullptr) {
        s.retiring.emplace(it->second.address(), it->second);
        it = s.pools.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& stage : next->stages)
      if (s.pools.count(stage.name) == 0)
        add_pool(self, stage.name);
    announce_pools(self);
    // Applied once every pool has it: the recorded time is after the last
    // claim made under the old limits.
    gather<bool>(
      self, told, caf::duration{5s},
      [=](std::vector<std::pair<caf::actor, bool>>) {
        if (self->state.config == next) // else a newer one is on its way
          record_applied(self, restart);
      },
      config_atom::value, next);
  });
}

void on_notice(self_ptr self, const notice& n) {
  auto& st = self->state;
  if (n.channel == "spool_cancel") {
    int64_t run_id = 0;
    try {
      run_id = std::stoll(n.payload);
    } catch (...) {
      return;
    }
    for (auto& p : all_pools(self))
      self->send(p, cancel_atom::value, run_id);
    return;
  }
  if (n.channel == "spool_config") {
    if (st.opts.config_source == "db")
      self->send(st.source, reload_atom::value,
                 std::string{n.payload.empty() ? "listener reconnected" : "config push"});
    else if (!n.payload.empty())
      spdlog::info("configuration version {} was pushed; this worker follows {} (start it "
                   "with --config db to follow pushes)",
                   n.payload, st.opts.config_source.empty() ? "no source" : st.opts.config_source);
    return;
  }
  if (n.payload.empty()) {
    for (auto& [stage, p] : st.pools)
      self->send(p, wakeup_atom::value);
    return;
  }
  if (auto p = st.pools.find(n.payload); p != st.pools.end())
    self->send(p->second, wakeup_atom::value);
}

void on_pool_down(self_ptr self, const caf::down_msg& dm) {
  auto& st = self->state;
  if (st.finishing)
    return;
  if (st.retiring.erase(dm.source) > 0) {
    announce_pools(self);
    check_drained(self);
    return;
  }
  auto it = std::find_if(st.pools.begin(), st.pools.end(),
                         [&](auto& kv) { return kv.second.address() == dm.source; });
  if (it == st.pools.end())
    return;
  auto stage = it->first;
  st.pools.erase(it);
  if (st.draining) {
    announce_pools(self);
    check_drained(self);
    return;
  }
  // Its claims go back to the queue: the next heartbeat no longer names
  // them, and the database hands them back.
  spdlog::error("the {} pool died ({}); replacing it", stage, self->system().render(dm.reason));
  add_pool(self, stage);
  announce_pools(self);
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
  st.stored_version = st.opts.config_stored_version;
  auto db = db_options_of(st);
  st.claimer = spawn_claimer(self, db);
  st.recorder = spawn_recorder(self, db);
  st.heartbeater = spawn_heartbeater(self, db);
  st.maintainer = spawn_maintainer(self, db);
  st.outcomes = spawn_outcome_writer(self, st.config,
                                     {st.opts.worker_id, st.recorder, st.outage, st.opts.metrics});
  st.leases = spawn_lease_keeper(self, st.config,
                                 {st.opts.worker_id, st.heartbeater, st.outcomes, st.outage,
                                  st.opts.http_address});
  st.maintenance = spawn_maintenance(self, st.config, st.maintainer, st.outage, st.opts.worker_id,
                                     st.opts.metrics);
  st.source = spawn_config_source(self, {st.opts.config_source, st.opts.watch_config,
                                         st.stored_version, st.maintainer,
                                         caf::actor_cast<caf::actor>(self), st.outage});
  after_providers_synced(self, st.config, [=] {
    auto& s = self->state;
    if (s.draining || s.finishing)
      return;
    for (auto& stage : s.config->stages)
      add_pool(self, stage.name);
    announce_pools(self);
  });
  record_applied(self, {});
  st.listener = spawn_listener(self, db, caf::actor_cast<caf::actor>(self));
  announce_pools(self);
  self->set_down_handler([=](caf::down_msg& dm) { on_pool_down(self, dm); });
  spdlog::info("worker {} started: {} stage(s), config {}", st.opts.worker_id,
               st.config->stages.size(), st.config->version);
  self->delayed_send(self, worker(self).progress_log_interval(), tick_atom::value,
                     st.progress_generation);

  return {
    [=](drained_atom, const std::string&) {
      auto& s = self->state;
      auto pool = caf::actor_cast<caf::actor>(self->current_sender());
      if (s.retiring.count(pool.address()) != 0 || s.draining) {
        // Its work is done: let it go (its DOWN removes it).
        self->send_exit(pool, caf::exit_reason::user_shutdown);
      }
    },
    [=](idle_atom, const std::string&) { check_idle(self); },
    [=](wakeup_atom, const notice& n) { on_notice(self, n); },
    [=](config_atom, const config_update& u) { apply(self, u); },
    [=](reload_atom, const std::string& reason) {
      self->send(self->state.source, reload_atom::value, reason);
    },
    [=](tick_atom, uint64_t generation) {
      auto& s = self->state;
      if (s.finishing || generation != s.progress_generation)
        return;
      log_progress(self);
      self->delayed_send(self, worker(self).progress_log_interval(), tick_atom::value,
                         generation);
    },
    [=](drain_atom) { drain(self); },
    [=](ping_atom) { return true; },
    [=](sync_atom) { sync_providers(self); },
    [=](stop_atom) {
      auto& s = self->state;
      if (s.finishing)
        return;
      spdlog::warn("drain deadline passed with {} pool(s) still running jobs or recording "
                   "outcomes (is the database answering?): exiting; their leases expire and "
                   "another worker rescues them",
                   s.pools.size() + s.retiring.size());
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
