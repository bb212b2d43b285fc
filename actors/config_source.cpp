#include "actors/config_source.hpp"

#include "actors/messages.hpp"
#include "runtime/file_watch.hpp"
#include "runtime/pg/outage.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <spdlog/spdlog.h>

#include <system_error>

namespace spool::actors {

using namespace std::chrono_literals;

namespace {

// -- the file watch: a detached actor that blocks in inotify -----------------------

struct watch_state {
  std::unique_ptr<file_watch> watch;
  caf::actor owner;
  static inline const char* name = "config_file_watch";
};

caf::behavior file_watcher(caf::stateful_actor<watch_state>* self, std::string path,
                           caf::actor owner) {
  self->state.owner = std::move(owner);
  try {
    self->state.watch = std::make_unique<file_watch>(path);
  } catch (const std::exception& e) {
    spdlog::warn("cannot watch {} ({}): its changes apply on SIGHUP only", path, e.what());
    self->quit();
    return {};
  }
  self->send(self, poll_atom::value);
  return {
    [=](poll_atom) {
      // Back to the mailbox at least every 100 ms, so an exit is served.
      if (self->state.watch->wait(100ms))
        self->send(self->state.owner, reload_atom::value, std::string{"file change"});
      self->send(self, poll_atom::value);
    },
  };
}

// -- the source ------------------------------------------------------------------------

struct source_state {
  config_source_options opts;
  int64_t stored_version = 0; // db: in force (or refused: not asked again)
  bool fetching = false;
  std::string again; // db: a reload arrived while fetching (its reason)
  static inline const char* name = "config_source";
};

using self_ptr = caf::stateful_actor<source_state>*;

void publish(self_ptr self, std::shared_ptr<const config::snapshot> cfg, std::string reason,
             int64_t stored_version) {
  self->send(self->state.opts.subscriber, config_atom::value,
             config_update{std::move(cfg), std::move(reason), stored_version});
}

void reload_file(self_ptr self, const std::string& reason) {
  const auto& path = self->state.opts.source;
  auto res = config::load_file(path);
  if (!res.ok()) {
    spdlog::error("configuration_refused ({}): {} has {} problem(s), the configuration in "
                  "force stays: {}",
                  reason, path, res.problems.size(), config::to_string(res.problems));
    return;
  }
  publish(self, res.config, reason, 0);
}

void reload_db(self_ptr self, const std::string& reason) {
  auto& st = self->state;
  if (st.fetching) {
    st.again = reason;
    return;
  }
  st.fetching = true;
  self->request(st.opts.maintainer, caf::duration{60s}, fetch_atom::value)
    .then(
      [=](const store::stored_config& stored) {
        auto& s = self->state;
        s.fetching = false;
        if (stored.version == 0) {
          spdlog::warn("configuration reload ({}): no configuration is stored", reason);
        } else if (stored.version != s.stored_version) {
          s.stored_version = stored.version;
          auto res = config::parse(stored.content);
          if (!res.ok())
            spdlog::error("configuration_refused ({}): stored version {} has {} problem(s), "
                          "the configuration in force stays: {}",
                          reason, stored.version, res.problems.size(),
                          config::to_string(res.problems));
          else
            publish(self, res.config, reason + ", stored version " + std::to_string(stored.version),
                    stored.version);
        }
        if (!s.again.empty())
          reload_db(self, std::exchange(s.again, std::string{}));
      },
      [=](const caf::error& e) {
        auto& s = self->state;
        s.fetching = false;
        // The listener's reconnect asks again once the database is back.
        if (!s.opts.outage->down())
          spdlog::warn("configuration reload ({}): fetching the stored configuration failed: "
                       "{}",
                       reason, self->system().render(e));
        if (!s.again.empty())
          reload_db(self, std::exchange(s.again, std::string{}));
      });
}

caf::behavior config_source(self_ptr self, config_source_options opts) {
  auto& st = self->state;
  st.opts = std::move(opts);
  st.stored_version = st.opts.stored_version;
  if (st.opts.watch && !st.opts.source.empty() && st.opts.source != "db")
    self->spawn<caf::detached + caf::linked>(file_watcher, st.opts.source,
                                             caf::actor_cast<caf::actor>(self));
  return {
    [=](reload_atom, const std::string& reason) {
      const auto& source = self->state.opts.source;
      if (source.empty())
        spdlog::info("configuration reload ({}) ignored: this worker's configuration has no "
                     "source to re-read",
                     reason);
      else if (source == "db")
        reload_db(self, reason);
      else
        reload_file(self, reason);
    },
  };
}

} // namespace

caf::actor spawn_config_source(caf::local_actor* parent, config_source_options opts) {
  // Detached: it reads the configuration file, a blocking call that stays
  // off CAF's scheduler threads.
  return parent->spawn<caf::detached + caf::linked>(config_source, std::move(opts));
}

} // namespace spool::actors
