#include "actors/outcome_writer.hpp"

#include "actors/messages.hpp"
#include "actors/trace.hpp"
#include "runtime/pg/outage.hpp"
#include "runtime/worker_metrics.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_response_promise.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <vector>

namespace spool::actors {

using namespace std::chrono_literals;

namespace {

struct writer_state {
  outcome_writer_options opts;
  std::shared_ptr<const config::snapshot> config;
  std::vector<store::outcome_record> pending;   // to record
  std::vector<store::outcome_record> recording; // the batch in flight
  bool flush_queued = false; // a (flush_atom) to ourselves is pending
  std::chrono::milliseconds backoff{0};
  std::vector<caf::typed_response_promise<bool>> drained; // waiting for empty
  static inline const char* name = "outcome_writer";
};

using self_ptr = caf::stateful_actor<writer_state>*;

bool empty(const writer_state& st) {
  return st.pending.empty() && st.recording.empty();
}

void answer_drained(self_ptr self) {
  auto& st = self->state;
  if (!empty(st))
    return;
  for (auto& rp : st.drained)
    rp.deliver(true);
  st.drained.clear();
}

void flush(self_ptr self) {
  auto& st = self->state;
  if (!st.recording.empty() || st.pending.empty())
    return;
  const auto& w = st.config->worker;
  auto n = std::min<size_t>(st.pending.size(),
                            static_cast<size_t>(std::max(1, w.record_batch_limit)));
  st.recording.assign(std::make_move_iterator(st.pending.begin()),
                      std::make_move_iterator(st.pending.begin() + static_cast<ptrdiff_t>(n)));
  st.pending.erase(st.pending.begin(), st.pending.begin() + static_cast<ptrdiff_t>(n));
  // Isolating a bad record takes about 2 log2(n) calls.
  int calls = 2;
  for (size_t k = n; k > 1; k /= 2)
    calls += 2;
  trace_step("record", st.recording.front().run_id);
  auto asked = std::chrono::steady_clock::now();
  self
    ->request(st.opts.recorder, caf::duration{db_budget(w, calls)}, record_atom::value,
              st.opts.worker_id, outcome_batch{st.recording})
    .then(
      [=](const recorded_batch& res) {
        auto& s = self->state;
        if (s.opts.metrics)
          s.opts.metrics->recorded(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count());
        s.backoff = 0ms;
        for (auto& r : s.recording)
          trace_step("recorded", r.run_id);
        s.recording.clear();
        for (auto& r : res.results)
          if (!r.accepted && r.state != "unrecordable")
            spdlog::warn("outcome for run {} refused: this worker no longer holds it "
                         "(lease lost or task cancelled); state is {}",
                         r.run_id, r.state);
        flush(self);
        answer_drained(self);
      },
      [=](const caf::error& err) {
        auto& s = self->state;
        s.pending.insert(s.pending.begin(), std::make_move_iterator(s.recording.begin()),
                         std::make_move_iterator(s.recording.end()));
        s.recording.clear();
        s.backoff = std::clamp<std::chrono::milliseconds>(s.backoff * 2, 250ms, 5s);
        if (s.opts.outage->down())
          spdlog::debug("recording {} outcome(s) waits for the database: {}", s.pending.size(),
                        self->system().render(err));
        else
          spdlog::warn("recording {} outcome(s) failed, retrying in {} ms: {}", s.pending.size(),
                       s.backoff.count(), self->system().render(err));
        s.flush_queued = true;
        self->delayed_send(self, s.backoff, flush_atom::value);
      });
}

caf::behavior outcome_writer(self_ptr self, std::shared_ptr<const config::snapshot> cfg,
                             outcome_writer_options opts) {
  self->state.config = std::move(cfg);
  self->state.opts = std::move(opts);
  return {
    [=](record_atom, std::vector<store::outcome_record>& recs) {
      trace_step("to_writer", recs.front().run_id);
      auto& st = self->state;
      if (st.pending.empty())
        st.pending = std::move(recs);
      else
        st.pending.insert(st.pending.end(), std::make_move_iterator(recs.begin()),
                          std::make_move_iterator(recs.end()));
      // The pools hand over what finished together; while a batch is being
      // recorded, the next one gathers here.
      if (!st.flush_queued)
        flush(self);
    },
    [=](flush_atom) {
      self->state.flush_queued = false;
      flush(self);
    },
    [=](held_atom) {
      held_report r;
      for (auto* recs : {&self->state.pending, &self->state.recording})
        for (auto& rec : *recs)
          r.held.push_back({rec.run_id, rec.attempt, rec.lease_token});
      return r;
    },
    [=](stats_atom) {
      return static_cast<int64_t>(self->state.pending.size() + self->state.recording.size());
    },
    [=](drain_atom) {
      auto rp = self->make_response_promise<bool>();
      self->state.drained.push_back(rp);
      answer_drained(self);
      return rp;
    },
    [=](config_atom, std::shared_ptr<const config::snapshot>& next) {
      self->state.config = std::move(next);
    },
  };
}

} // namespace

caf::actor spawn_outcome_writer(caf::local_actor* parent,
                                std::shared_ptr<const config::snapshot> config,
                                outcome_writer_options opts) {
  return parent->spawn<caf::linked>(outcome_writer, std::move(config), std::move(opts));
}

} // namespace spool::actors
