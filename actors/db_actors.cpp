#include "actors/db_actors.hpp"

#include "actors/messages.hpp"
#include "actors/trace.hpp"
#include "runtime/pg/outage.hpp"
#include "runtime/pg/pool.hpp"
#include "runtime/store/config_store.hpp"
#include "runtime/store/maintenance.hpp"
#include "runtime/store/providers.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/local_actor.hpp>
#include <caf/result.hpp>
#include <caf/scheduled_actor.hpp>
#include <caf/sec.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <spdlog/spdlog.h>

#include <memory>

namespace spool::actors {

using namespace std::chrono_literals;

namespace {

/// One connection, reconnected with backoff when the server went away.
struct db_state {
  std::unique_ptr<pg::pool> pool;
  /// Whether each new session first runs store::warm_up (the claimer and the
  /// recorder: the first job after a start or a reconnect must not wait for
  /// plans), and the connects() it last did so for.
  bool warm_up = false;
  std::size_t warmed_connects = 0;
  std::shared_ptr<pg::outage_log> outage;
  std::chrono::milliseconds call_timeout{0}; // live: db_call_timeout_s
};

using db_self = caf::stateful_actor<db_state>*;

void init(db_self self, const db_options& db, bool warm_up = false) {
  self->state.warm_up = warm_up;
  pg::pool_options o;
  o.size = 1;
  o.reconnect_timeout = 10s;
  o.connection = db.connection;
  self->state.call_timeout = db.connection.call_timeout;
  self->state.pool = std::make_unique<pg::pool>(db.url, o);
  self->state.outage = db.outage ? db.outage : std::make_shared<pg::outage_log>();
}

/// Runs `fn` on a healthy connection. A database error becomes an error
/// reply: an exception escaping a handler would kill this actor and, through
/// the link, the worker. An unreachable database is reported to the outage
/// log; any answer from it, even an error, means it is reachable.
template <class F>
auto with_store(db_self self, F&& fn)
  -> caf::result<decltype(fn(std::declval<store::store&>(), std::declval<pg::connection&>()))> {
  auto& outage = *self->state.outage;
  try {
    auto conn = self->state.pool->acquire();
    conn->set_call_timeout(self->state.call_timeout);
    store::store q{*conn};
    if (auto& st = self->state; st.warm_up && st.pool->connects() != st.warmed_connects) {
      st.warmed_connects = st.pool->connects();
      try {
        q.warm_up();
      } catch (const pg::error& e) {
        if (e.connection_lost())
          throw;
        spdlog::debug("warming up a new database session: {}", e.what());
      }
    }
    auto out = fn(q, *conn);
    outage.succeeded();
    return out;
  } catch (const pg::error& e) {
    if (e.connection_lost())
      outage.failed(e.what());
    else
      outage.succeeded();
    return caf::make_error(caf::sec::runtime_error, std::string{e.what()});
  } catch (const std::exception& e) {
    return caf::make_error(caf::sec::runtime_error, std::string{e.what()});
  }
}

/// (config_atom, call_timeout_ms): the live db_call_timeout_s.
auto on_call_timeout(db_self self) {
  return [=](config_atom, int64_t ms) { self->state.call_timeout = std::chrono::milliseconds{ms}; };
}

/// (warm_atom): connects and warms the session up before the first call
/// needs it.
auto on_warm(db_self self) {
  return [=](warm_atom) { with_store(self, [](store::store&, pg::connection&) { return true; }); };
}

caf::behavior claimer(db_self self, db_options db) {
  init(self, db, true);
  self->send(self, warm_atom::value);
  return {
    on_call_timeout(self),
    on_warm(self),
    [=](claim_atom, const claim_request& req) -> caf::result<claim_batch> {
      if (std::chrono::steady_clock::now() > req.deadline)
        return caf::make_error(caf::sec::request_timeout, "claim request expired unsent");
      trace_step("claim_sql", req.stage);
      return with_store(self, [&](store::store& q, pg::connection&) {
        claim_batch b;
        b.stage = req.stage;
        // (Budgets may hold runs back without a provider too.)
        auto r = q.claim_limited(req.stage, req.limit, req.worker, req.lease, req.provider,
                                 req.fallback, req.token);
        trace_step("claim_sql_done", req.stage);
        b.runs = std::move(r.runs);
        b.held_back = std::move(r.held_back);
        b.wait = r.wait;
        return b;
      });
    },
  };
}

caf::behavior recorder(db_self self, db_options db) {
  init(self, db, true);
  self->send(self, warm_atom::value);
  return {
    on_call_timeout(self),
    on_warm(self),
    [=](record_atom, const std::string& worker, const outcome_batch& batch) {
      trace_step("record_sql", batch.records.empty() ? 0 : batch.records.front().run_id);
      return with_store(self, [&](store::store& q, pg::connection&) {
        auto out = recorded_batch{q.record_isolating(worker, batch.records)};
        trace_step("record_sql_done", batch.records.empty() ? 0 : batch.records.front().run_id);
        return out;
      });
    },
  };
}

caf::behavior heartbeater(db_self self, db_options db) {
  init(self, db);
  return {
    on_call_timeout(self),
    [=](register_atom, const store::worker_info& w) {
      return with_store(self, [&](store::store& q, pg::connection&) {
        q.register_worker(w);
        return true;
      });
    },
    [=](heartbeat_atom, const heartbeat_request& req) {
      return with_store(self, [&](store::store& q, pg::connection&) {
        return heartbeat_reply{q.heartbeat(req.worker, req.lease, req.held, req.horizon)};
      });
    },
    [=](applied_atom, const applied_config& a) {
      return with_store(self, [&](store::store&, pg::connection& c) {
        store::record_applied_config(c, a.worker, a.checksum, a.stored_version, a.applied_us,
                                     a.restart_pending);
        return true;
      });
    },
    [=](stopped_atom, const std::string& worker) {
      return with_store(self, [&](store::store& q, pg::connection&) {
        q.worker_stopped(worker);
        return true;
      });
    },
  };
}

caf::behavior maintainer(db_self self, db_options db) {
  init(self, db);
  return {
    on_call_timeout(self),
    [=](rescue_atom) {
      return with_store(self, [&](store::store& q, pg::connection&) {
        maintenance_report r;
        for (auto& x : q.rescue(1000)) {
          if (!x.accepted)
            continue;
          ++r.rescued;
          r.failed += x.state == "failed";
          if (r.rescued_runs.size() < 5)
            r.rescued_runs.push_back(x.run_id);
        }
        return r;
      });
    },
    [=](sweep_atom, const std::vector<store::stage_limit>& limits, double margin_s,
        double stale_after_s) {
      return with_store(self, [&](store::store&, pg::connection& c) {
        auto rep = store::sweep_stuck(c, limits, margin_s, stale_after_s);
        maintenance_report r;
        r.stuck = rep.stuck;
        r.stale = rep.stale_ready;
        r.stale_approval = rep.stale_approval;
        return r;
      });
    },
    [=](sync_atom, const std::string& providers_json, const std::string& budgets_json) {
      return with_store(self, [&](store::store& q, pg::connection&) {
        q.sync_providers(providers_json);
        q.sync_budgets(budgets_json);
        return true;
      });
    },
    [=](events_atom, const std::string& worker) {
      return with_store(self, [&](store::store& q, pg::connection&) {
        return q.take_provider_events(worker);
      });
    },
    [=](fetch_atom) {
      return with_store(self, [&](store::store&, pg::connection& c) {
        return store::latest_config(c).value_or(store::stored_config{});
      });
    },
    [=](pending_atom, const std::vector<std::string>& stages) {
      return with_store(
        self, [&](store::store& q, pg::connection&) { return q.has_pending_work(stages); });
    },
  };
}

struct listener_state {
  std::unique_ptr<pg::connection> conn;
  db_options db;
  caf::actor subscriber;
  std::map<std::string, caf::actor> pools; // a stage's wake-ups go straight to its pool
  std::chrono::milliseconds backoff{100};
};

caf::behavior listener(caf::stateful_actor<listener_state>* self, db_options db,
                       caf::actor subscriber) {
  self->state.db = std::move(db);
  self->state.db.connection.call_timeout = 0ms; // it waits for input by design
  if (!self->state.db.outage)
    self->state.db.outage = std::make_shared<pg::outage_log>();
  self->state.subscriber = std::move(subscriber);
  self->send(self, poll_atom::value);
  return {
    [=](poll_atom) {
      auto& st = self->state;
      try {
        if (!st.conn || !st.conn->ok()) {
          st.conn = std::make_unique<pg::connection>(st.db.url, st.db.connection);
          st.conn->listen("spool_wakeup");
          st.conn->listen("spool_cancel");
          st.conn->listen("spool_config");
          st.backoff = 100ms;
          st.db.outage->succeeded();
          // Anything may have happened while we were deaf: wake everyone,
          // and look for a configuration pushed meanwhile.
          self->send(st.subscriber, wakeup_atom::value, notice{"spool_wakeup", ""});
          self->send(st.subscriber, wakeup_atom::value, notice{"spool_config", ""});
        }
        // Wait for input, but come back to the mailbox at least every
        // 100 ms so that an exit is served promptly.
        if (st.conn->wait_readable(100ms))
          for (auto& n : st.conn->drain_notifications()) {
            if (n.channel == "spool_wakeup")
              if (auto p = st.pools.find(n.payload); p != st.pools.end()) {
                trace_step("wakeup", n.payload);
                self->send(p->second, wakeup_atom::value);
                continue;
              }
            self->send(st.subscriber, wakeup_atom::value,
                       notice{std::move(n.channel), std::move(n.payload)});
          }
        self->send(self, poll_atom::value);
      } catch (const std::exception& e) {
        st.db.outage->failed(e.what());
        spdlog::debug("notification listener: {}; reconnecting in {} ms", e.what(),
                      st.backoff.count());
        st.conn.reset();
        self->delayed_send(self, st.backoff, poll_atom::value);
        st.backoff = std::min<std::chrono::milliseconds>(st.backoff * 2, 5s);
      }
    },
    [=](pools_atom, pool_set& ps) { self->state.pools = std::move(ps.by_stage); },
  };
}

} // namespace

caf::actor spawn_claimer(caf::local_actor* parent, const db_options& db) {
  return parent->spawn<caf::detached + caf::linked>(claimer, db);
}

caf::actor spawn_recorder(caf::local_actor* parent, const db_options& db) {
  return parent->spawn<caf::detached + caf::linked>(recorder, db);
}

caf::actor spawn_heartbeater(caf::local_actor* parent, const db_options& db) {
  return parent->spawn<caf::detached + caf::linked>(heartbeater, db);
}

caf::actor spawn_maintainer(caf::local_actor* parent, const db_options& db) {
  return parent->spawn<caf::detached + caf::linked>(maintainer, db);
}

caf::actor spawn_listener(caf::local_actor* parent, const db_options& db,
                          caf::actor subscriber) {
  return parent->spawn<caf::detached + caf::linked>(listener, db, std::move(subscriber));
}

} // namespace spool::actors
