#pragma once
// Asks several actors the same question and acts once on all the answers.

#include <caf/actor.hpp>
#include <caf/duration.hpp>
#include <caf/error.hpp>

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

namespace spool::actors {

/// Sends `xs...` to every actor of `targets` as a request and calls
/// `done(answers)` once each has answered or failed (an actor that died or
/// timed out is simply missing from `answers`). Answers pair the actor with
/// its reply, in arrival order. With no targets, `done` runs at once.
template <class T, class Self, class Done, class... Ts>
void gather(Self* self, const std::vector<caf::actor>& targets, caf::duration timeout, Done done,
            const Ts&... xs) {
  struct pending {
    std::vector<std::pair<caf::actor, T>> answers;
    std::size_t left;
    Done done;
  };
  auto p = std::make_shared<pending>(pending{{}, targets.size(), std::move(done)});
  if (targets.empty()) {
    p->done(std::move(p->answers));
    return;
  }
  for (const auto& a : targets) {
    auto one_less = [p] {
      if (--p->left == 0)
        p->done(std::move(p->answers));
    };
    self->request(a, timeout, xs...)
      .then(
        [p, a, one_less](T& answer) {
          p->answers.emplace_back(a, std::move(answer));
          one_less();
        },
        [one_less](const caf::error&) { one_less(); });
  }
}

} // namespace spool::actors
