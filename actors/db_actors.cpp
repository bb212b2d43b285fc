#include "actors/db_actors.hpp"

#include "actors/messages.hpp"
#include "runtime/pg/pool.hpp"
#include "runtime/store/maintenance.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/local_actor.hpp>
#include <caf/scheduled_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/send.hpp>
#include <caf/sec.hpp>
#include <caf/result.hpp>
#include <spdlog/spdlog.h>

#include <memory>

namespace spool::actors {

using namespace std::chrono_literals;

namespace {

/// One connection, reconnected with backoff when the server went away.
struct db_state {
  std::unique_ptr<pg::pool> pool;
};

pg::pool_options single_connection() {
  pg::pool_options o;
  o.size = 1;
  o.reconnect_timeout = 10s;
  return o;
}

/// Runs `fn` on a healthy connection. A database error becomes an error
/// reply: an exception escaping a handler would kill this actor and, through
/// the link, the worker.
template <class F>
auto with_store(caf::stateful_actor<db_state>* self, F&& fn)
  -> caf::result<decltype(fn(std::declval<store::store&>(), std::declval<pg::connection&>()))> {
  try {
    auto conn = self->state.pool->acquire();
    store::store q{*conn};
    return fn(q, *conn);
  } catch (const std::exception& e) {
    return caf::make_error(caf::sec::runtime_error, std::string{e.what()});
  }
}

caf::behavior claimer(caf::stateful_actor<db_state>* self, std::string url) {
  self->state.pool = std::make_unique<pg::pool>(url, single_connection());
  return {
    [=](claim_atom, const std::string& stage, int n, const std::string& worker,
        int64_t lease_ms) {
      return with_store(self, [&](store::store& q, pg::connection&) {
        return claim_batch{stage, q.claim(stage, n, worker, std::chrono::milliseconds{lease_ms})};
      });
    },
  };
}

caf::behavior recorder(caf::stateful_actor<db_state>* self, std::string url) {
  self->state.pool = std::make_unique<pg::pool>(url, single_connection());
  return {
    [=](record_atom, const std::string& worker, const outcome_batch& batch) {
      return with_store(self, [&](store::store& q, pg::connection&) {
        return recorded_batch{q.record(worker, batch.records)};
      });
    },
  };
}

caf::behavior maintainer(caf::stateful_actor<db_state>* self, std::string url) {
  self->state.pool = std::make_unique<pg::pool>(url, single_connection());
  return {
    [=](register_atom, const std::string& id, const std::string& host, int pid,
        const std::string& version) {
      return with_store(self, [&](store::store& q, pg::connection&) {
        q.register_worker({id, host, pid, version});
        return true;
      });
    },
    [=](heartbeat_atom, const std::string& worker, int64_t lease_ms) {
      return with_store(self, [&](store::store& q, pg::connection&) {
        return q.heartbeat(worker, std::chrono::milliseconds{lease_ms});
      });
    },
    [=](rescue_atom) {
      return with_store(self, [&](store::store& q, pg::connection&) {
        maintenance_report r;
        for (auto& x : q.rescue(1000)) {
          if (!x.accepted)
            continue;
          ++r.rescued;
          r.failed += x.state == "failed";
        }
        return r;
      });
    },
    [=](sweep_atom, const std::vector<std::string>& stages, const std::vector<double>& timeouts,
        const std::vector<std::string>& per, double margin_s, double stale_after_s) {
      return with_store(self, [&](store::store&, pg::connection& c) {
        std::vector<store::stage_limit> limits;
        for (size_t i = 0; i < stages.size() && i < timeouts.size() && i < per.size(); ++i)
          limits.push_back({stages[i], timeouts[i], per[i]});
        auto rep = store::sweep_stuck(c, limits, margin_s, stale_after_s);
        maintenance_report r;
        r.stuck = rep.stuck;
        r.stale = rep.stale_ready;
        return r;
      });
    },
    [=](pending_atom, const std::vector<std::string>& stages) {
      return with_store(
        self, [&](store::store& q, pg::connection&) { return q.has_pending_work(stages); });
    },
    [=](stopped_atom, const std::string& worker) {
      return with_store(self, [&](store::store& q, pg::connection&) {
        q.worker_stopped(worker);
        return true;
      });
    },
  };
}

struct listener_state {
  std::unique_ptr<pg::connection> conn;
  std::string url;
  caf::actor subscriber;
  std::chrono::milliseconds backoff{100};
};

caf::behavior listener(caf::stateful_actor<listener_state>* self, std::string url,
                       caf::actor subscriber) {
  self->state.url = std::move(url);
  self->state.subscriber = std::move(subscriber);
  self->send(self, poll_atom::value);
  return {
    [=](poll_atom) {
      auto& st = self->state;
      try {
        if (!st.conn || !st.conn->ok()) {
          st.conn = std::make_unique<pg::connection>(st.url);
          st.conn->listen("spool_wakeup");
          st.conn->listen("spool_cancel");
          st.backoff = 100ms;
          // Anything may have happened while we were deaf: wake everyone.
          self->send(st.subscriber, wakeup_atom::value, notice{"spool_wakeup", ""});
        }
        // Wait for input, but come back to the mailbox at least every
        // 100 ms so that an exit is served promptly.
        if (st.conn->wait_readable(100ms))
          for (auto& n : st.conn->drain_notifications())
            self->send(st.subscriber, wakeup_atom::value,
                       notice{std::move(n.channel), std::move(n.payload)});
        self->send(self, poll_atom::value);
      } catch (const std::exception& e) {
        spdlog::warn("notification listener: {}; reconnecting in {} ms", e.what(),
                     st.backoff.count());
        st.conn.reset();
        self->delayed_send(self, st.backoff, poll_atom::value);
        st.backoff = std::min<std::chrono::milliseconds>(st.backoff * 2, 5s);
      }
    },
  };
}

} // namespace

caf::actor spawn_claimer(caf::local_actor* parent, const std::string& url) {
  return parent->spawn<caf::detached + caf::linked>(claimer, url);
}

caf::actor spawn_recorder(caf::local_actor* parent, const std::string& url) {
  return parent->spawn<caf::detached + caf::linked>(recorder, url);
}

caf::actor spawn_maintainer(caf::local_actor* parent, const std::string& url) {
  return parent->spawn<caf::detached + caf::linked>(maintainer, url);
}

caf::actor spawn_listener(caf::local_actor* parent, const std::string& url,
                          caf::actor subscriber) {
  return parent->spawn<caf::detached + caf::linked>(listener, url, std::move(subscriber));
}

} // namespace spool::actors
