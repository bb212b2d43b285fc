#pragma once
// Waiting on a condition instead of sleeping: a test polls what it expects
// until a deadline, so a slow machine makes it slower, never wrong.

#include <chrono>
#include <thread>

namespace spool::test {

/// Polls `condition` (a callable returning bool) every `interval` until it
/// holds; false when it still does not after `timeout_s`.
template <class Condition>
bool eventually(Condition&& condition, double timeout_s = 30,
                std::chrono::milliseconds interval = std::chrono::milliseconds{20}) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    if (condition())
      return true;
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(interval);
  }
}

} // namespace spool::test
