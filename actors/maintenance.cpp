#include "actors/maintenance.hpp"

#include "actors/messages.hpp"
#include "runtime/logging.hpp"
#include "runtime/pg/outage.hpp"
#include "runtime/store/cluster_metrics.hpp"
#include "runtime/worker_metrics.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_response_promise.hpp>
#include <spdlog/spdlog.h>

#include <functional>

namespace spool::actors {

namespace {

enum class duty : int { rescue, sweep, events };

/// A condition the sweep sees every interval while it lasts (runs waiting
/// past a sweep interval): said when it begins, again each time it doubles,
/// and once when it ends, rather than at every sweep.
struct episode {
  int reported = 0;

  /// Whether `n` is news worth a warning.
  bool worsened(int n) {
    if (n <= 0 || (reported > 0 && n < 2 * reported))
      return false;
    reported = n;
    return true;
  }
  /// Whether the condition just ended.
  bool cleared(int n) {
    if (n > 0 || reported == 0)
      return false;
    reported = 0;
    return true;
  }
};

struct maintenance_state {
  std::shared_ptr<const config::snapshot> config;
  caf::actor maintainer;
  std::shared_ptr<pg::outage_log> outage;
  std::string worker_id;
  std::shared_ptr<worker_metrics> metrics; // may be null
  bool rescuing = false, sweeping = false, taking_events = false;
  episode stale, stale_approval;
  uint64_t generation = 0; // of the timers
  static inline const char* name = "maintenance";
};

using self_ptr = caf::stateful_actor<maintenance_state>*;

const config::worker_config& worker(self_ptr self) {
  return self->state.config->worker;
}

void arm(self_ptr self, duty d) {
  auto every = d == duty::rescue  ? worker(self).rescue_interval()
               : d == duty::sweep ? worker(self).stuck_sweep_interval()
                                  : worker(self).heartbeat_interval();
  self->delayed_send(self, every, tick_atom::value, static_cast<int>(d), self->state.generation);
}

void rescue(self_ptr self) {
  auto& st = self->state;
  if (st.rescuing)
    return;
  st.rescuing = true;
  self->request(st.maintainer, caf::duration{db_budget(worker(self))}, rescue_atom::value)
    .then(
      [=](const maintenance_report& r) {
        self->state.rescuing = false;
        if (r.rescued > 0) {
          std::string runs;
          for (auto id : r.rescued_runs)
            runs += (runs.empty() ? "" : ", ") + std::to_string(id);
          if (r.rescued > static_cast<int>(r.rescued_runs.size()))
            runs += ", ...";
          if (self->state.metrics)
            self->state.metrics->rescued("lease_expired", r.rescued);
          log_event(spdlog::level::warn, "rescued",
                    {{"reason", "lease_expired"},
                     {"runs", r.rescued},
                     {"failed", r.failed},
                     {"run_ids", runs},
                     {"worker", self->state.worker_id}},
                    fmt::format("rescued {} run(s) whose worker stopped heartbeating (runs {}; "
                                "{} failed past their lost-lease limit)",
                                r.rescued, runs, r.failed));
        }
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
  self
    ->request(st.maintainer, caf::duration{db_budget(worker(self), 2)}, sweep_atom::value,
              store::stage_limits_of(*st.config), worker(self).stuck_margin_s, worker(self).stuck_sweep_interval_s)
    .then(
      [=](const maintenance_report& r) {
        self->state.sweeping = false;
        if (r.stuck > 0) {
          if (self->state.metrics)
            self->state.metrics->rescued("stuck", r.stuck);
          log_event(spdlog::level::warn, "rescued",
                    {{"reason", "stuck"}, {"runs", r.stuck}, {"worker", self->state.worker_id}},
                    fmt::format("stuck-job sweep: rescued {} run(s) running far past their "
                                "timeout (counted as timed-out attempts)",
                                r.stuck));
        }
        auto& st = self->state;
        if (st.stale.worsened(r.stale))
          spdlog::warn("stuck-job sweep: {} run(s) have waited longer than a sweep "
                       "interval to start",
                       r.stale);
        else if (st.stale.cleared(r.stale))
          spdlog::info("stuck-job sweep: no run waits longer than a sweep interval any more");
        if (st.stale_approval.worsened(r.stale_approval))
          spdlog::warn("stuck-job sweep: {} task(s) have awaited approval longer than a "
                       "sweep interval",
                       r.stale_approval);
        else if (st.stale_approval.cleared(r.stale_approval))
          spdlog::info("stuck-job sweep: no task awaits approval longer than a sweep "
                       "interval any more");
      },
      [=](const caf::error& e) {
        self->state.sweeping = false;
        if (!self->state.outage->down())
          spdlog::warn("stuck-job sweep failed: {}", self->system().render(e));
      });
}

/// One provider or cost event as a log event: `paused` is logged as
/// provider_paused; cost events name their scope (and a cost_overrun its
/// task) instead of a provider.
void log_provider_event(const store::provider_event& e, const std::string& worker_id) {
  bool cost = e.kind == "budget_warning" || e.kind == "budget_exhausted"
              || e.kind == "cost_overrun";
  bool bad = e.kind == "breaker_opened" || e.kind == "quota_exhausted"
             || e.kind == "quota_warning" || e.kind == "paused" || e.kind == "budget_exhausted"
             || e.kind == "budget_warning" || e.kind == "cost_overrun";
  auto name = e.kind == "paused" ? std::string{"provider_paused"} : e.kind;
  auto text = fmt::format("{} ({}): {}", name, e.provider, e.message);
  auto level = bad ? spdlog::level::warn : spdlog::level::info;
  if (!cost)
    log_event(level, name, {{"provider", e.provider}, {"worker", worker_id}, {"detail", e.message}},
              text);
  else if (e.task_id)
    log_event(level, name,
              {{"scope", e.provider}, {"task_id", *e.task_id}, {"worker", worker_id},
               {"detail", e.message}},
              text);
  else
    log_event(level, name, {{"scope", e.provider}, {"worker", worker_id}, {"detail", e.message}},
              text);
}

/// Logs the provider events no worker has logged yet (each is logged by
/// exactly one worker of the cluster).
void take_events(self_ptr self, std::function<void()> done = [] {}) {
  auto& st = self->state;
  if (st.taking_events) {
    done();
    return;
  }
  st.taking_events = true;
  self
    ->request(st.maintainer, caf::duration{db_budget(worker(self))}, events_atom::value,
              st.worker_id)
    .then(
      [=](const std::vector<store::provider_event>& events) {
        self->state.taking_events = false;
        for (auto& e : events)
          log_provider_event(e, self->state.worker_id);
        done();
      },
      [=](const caf::error& e) {
        self->state.taking_events = false;
        if (!self->state.outage->down())
          spdlog::warn("reading provider events failed: {}", self->system().render(e));
        done();
      });
}

caf::behavior maintenance(self_ptr self, std::shared_ptr<const config::snapshot> cfg,
                          caf::actor maintainer, std::shared_ptr<pg::outage_log> outage,
                          std::string worker_id, std::shared_ptr<worker_metrics> metrics) {
  auto& st = self->state;
  st.worker_id = std::move(worker_id);
  st.metrics = std::move(metrics);
  st.config = std::move(cfg);
  st.maintainer = std::move(maintainer);
  st.outage = std::move(outage);
  arm(self, duty::rescue);
  arm(self, duty::sweep);
  arm(self, duty::events);
  return {
    [=](tick_atom, int d, uint64_t generation) {
      if (generation != self->state.generation)
        return;
      switch (static_cast<duty>(d)) {
        case duty::rescue:
          rescue(self);
          break;
        case duty::sweep:
          sweep(self);
          break;
        case duty::events:
          take_events(self);
          break;
      }
      arm(self, static_cast<duty>(d));
    },
    [=](events_atom) {
      // The last round before the worker stops.
      auto rp = self->make_response_promise<bool>();
      take_events(self, [=]() mutable { rp.deliver(true); });
      return rp;
    },
    [=](config_atom, std::shared_ptr<const config::snapshot>& next) {
      auto& s = self->state;
      bool rearm = next->worker.rescue_interval() != worker(self).rescue_interval()
                   || next->worker.stuck_sweep_interval() != worker(self).stuck_sweep_interval()
                   || next->worker.heartbeat_interval() != worker(self).heartbeat_interval();
      s.config = std::move(next);
      if (rearm) {
        ++s.generation;
        arm(self, duty::rescue);
        arm(self, duty::sweep);
        arm(self, duty::events);
      }
    },
  };
}

} // namespace

caf::actor spawn_maintenance(caf::local_actor* parent,
                             std::shared_ptr<const config::snapshot> config,
                             caf::actor maintainer, std::shared_ptr<pg::outage_log> outage,
                             std::string worker_id, std::shared_ptr<worker_metrics> metrics) {
  return parent->spawn<caf::linked>(maintenance, std::move(config), std::move(maintainer),
                                    std::move(outage), std::move(worker_id), std::move(metrics));
}

} // namespace spool::actors
