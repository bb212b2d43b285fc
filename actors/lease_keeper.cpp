#include "actors/lease_keeper.hpp"

#include "actors/gather.hpp"
#include "actors/messages.hpp"
#include "runtime/pg/outage.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <optional>
#include <utility>
#include <unistd.h>

namespace spool::actors {

using namespace std::chrono_literals;

namespace {

struct keeper_state {
  lease_keeper_options opts;
  std::shared_ptr<const config::snapshot> config;
  std::vector<caf::actor> pools;
  std::optional<applied_config> applied; // the latest, until it is recorded
  bool applied_sending = false;
  bool registered = false, registering = false, heartbeating = false;
  /// The stages or lease changed: register again once the configuration
  /// record is written (it sets the version, its time and what awaits a
  /// restart together; registering first would show the new version with
  /// the old record).
  bool reregister = false;
  uint64_t generation = 0; // of the heartbeat timer
  static inline const char* name = "lease_keeper";
};

using self_ptr = caf::stateful_actor<keeper_state>*;

const config::worker_config& worker(self_ptr self) {
  return self->state.config->worker;
}

void register_worker(self_ptr self);

void send_applied(self_ptr self) {
  auto& st = self->state;
  if (!st.applied || st.applied_sending || !st.registered)
    return;
  st.applied_sending = true;
  auto sent = *st.applied;
  self->request(st.opts.heartbeater, caf::duration{db_budget(worker(self))}, applied_atom::value,
                sent)
    .then(
      [=](bool) {
        auto& s = self->state;
        s.applied_sending = false;
        if (s.applied && s.applied->applied_us == sent.applied_us) {
          s.applied.reset();
          if (std::exchange(s.reregister, false)) {
            s.registered = false;
            register_worker(self);
          }
        } else {
          send_applied(self); // a newer one arrived meanwhile
        }
      },
      [=](const caf::error& e) {
        // Tried again at the next heartbeat.
        self->state.applied_sending = false;
        if (!self->state.opts.outage->down())
          spdlog::warn("recording the applied configuration failed (trying again): {}",
                       self->system().render(e));
      });
}

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
  w.http_address = st.opts.http_address;
  self->request(st.opts.heartbeater, caf::duration{db_budget(worker(self))}, register_atom::value,
                std::move(w))
    .then(
      [=](bool) {
        self->state.registering = false;
        self->state.registered = true;
        send_applied(self);
      },
      [=](const caf::error& e) {
        // Tried again at the next heartbeat: a worker started while the
        // database is down registers once it is back.
        self->state.registering = false;
        if (!self->state.opts.outage->down())
          spdlog::warn("registering the worker failed (trying again): {}",
                       self->system().render(e));
      });
}

/// Sends what the pools and the writer hold; `horizon_cap` is the newest
/// lease token handed out before they were asked.
void send_heartbeat(self_ptr self, std::vector<std::pair<caf::actor, held_report>> reports,
                    bool complete, int64_t horizon_cap) {
  auto& st = self->state;
  heartbeat_request req;
  req.worker = st.opts.worker_id;
  req.lease = worker(self).lease();
  std::map<int64_t, caf::actor> owner; // run id -> the pool executing it
  std::optional<int64_t> oldest_claim;
  for (auto& [who, r] : reports) {
    for (auto& c : r.held) {
      req.held.push_back(c);
      if (who != st.opts.outcomes)
        owner[c.run_id] = who;
    }
    for (auto t : r.claims_in_flight)
      oldest_claim = std::min(oldest_claim.value_or(t), t);
  }
  std::sort(req.held.begin(), req.held.end());
  req.held.erase(std::unique(req.held.begin(), req.held.end()), req.held.end());
  // Every token up to the horizon was handed out before the pools were
  // asked and is not in flight: its runs are named above, or were never
  // ours. An actor that did not answer may hold unnamed claims: then hand
  // nothing back this time (their leases are still extended by a later
  // heartbeat or expire and are rescued).
  req.horizon = complete ? std::min(horizon_cap, oldest_claim.value_or(horizon_cap + 1) - 1) : 0;
  self->request(st.opts.heartbeater, caf::duration{db_budget(worker(self))},
                heartbeat_atom::value, std::move(req))
    .then(
      [=](const heartbeat_reply& reply) {
        self->state.heartbeating = false;
        int released = 0;
        for (auto& note : reply.notes) {
          if (note.kind == store::heartbeat_note::what::released) {
            ++released;
            continue;
          }
          if (auto o = owner.find(note.claim.run_id); o != owner.end())
            self->send(o->second, lost_atom::value, note.claim);
        }
        if (released > 0)
          spdlog::warn("handed back {} run(s) claimed for this worker that it was not running "
                       "(a claim reply was lost)",
                       released);
      },
      [=](const caf::error& e) {
        self->state.heartbeating = false;
        if (!self->state.opts.outage->down())
          spdlog::warn("heartbeat failed: {}", self->system().render(e));
      });
}

void heartbeat(self_ptr self) {
  auto& st = self->state;
  register_worker(self);
  send_applied(self);
  if (st.heartbeating)
    return; // the last one is still waiting for the database
  st.heartbeating = true;
  auto horizon_cap = store::last_lease_token();
  auto asked = st.pools.size();
  gather<held_report>(
    self, st.pools, caf::duration{5s},
    [=](std::vector<std::pair<caf::actor, held_report>> from_pools) {
      bool pools_complete = from_pools.size() == asked;
      gather<held_report>(
        self, {self->state.opts.outcomes}, caf::duration{5s},
        [=](std::vector<std::pair<caf::actor, held_report>> from_writer) mutable {
          bool complete = pools_complete && from_writer.size() == 1;
          for (auto& x : from_writer)
            from_pools.push_back(std::move(x));
          send_heartbeat(self, std::move(from_pools), complete, horizon_cap);
        },
        held_atom::value);
    },
    held_atom::value);
}

void arm(self_ptr self) {
  self->delayed_send(self, worker(self).heartbeat_interval(), tick_atom::value,
                     self->state.generation);
}

caf::behavior lease_keeper(self_ptr self, std::shared_ptr<const config::snapshot> cfg,
                           lease_keeper_options opts) {
  self->state.config = std::move(cfg);
  self->state.opts = std::move(opts);
  register_worker(self);
  arm(self);
  return {
    [=](tick_atom, uint64_t generation) {
      if (generation != self->state.generation)
        return;
      heartbeat(self);
      arm(self);
    },
    [=](pools_atom, pool_set& ps) { self->state.pools = std::move(ps.pools); },
    [=](config_atom, std::shared_ptr<const config::snapshot>& next) {
      auto& st = self->state;
      bool rearm = next->worker.heartbeat_interval() != worker(self).heartbeat_interval();
      st.config = std::move(next);
      st.reregister = true; // after the configuration record (see above)
      if (rearm) {
        ++st.generation;
        arm(self);
      }
    },
    [=](applied_atom, applied_config& a) {
      self->state.applied = std::move(a);
      send_applied(self);
    },
    [=](stopped_atom) {
      auto rp = self->make_response_promise<bool>();
      self
        ->request(self->state.opts.heartbeater, caf::duration{2s}, stopped_atom::value,
                  self->state.opts.worker_id)
        .then([=](bool) mutable { rp.deliver(true); },
              [=](const caf::error&) mutable { rp.deliver(false); });
      return rp;
    },
  };
}

} // namespace

caf::actor spawn_lease_keeper(caf::local_actor* parent,
                              std::shared_ptr<const config::snapshot> config,
                              lease_keeper_options opts) {
  return parent->spawn<caf::linked>(lease_keeper, std::move(config), std::move(opts));
}

} // namespace spool::actors
