#pragma once
// Reports database outages in two log lines, however many connections see
// them: one when the database goes away (the first failure after a
// success), one when it is back (the first success after that), with how
// long it was gone. Thread-safe; share one per process.

#include <chrono>
#include <mutex>
#include <string>
#include <string_view>

namespace spool::pg {

class outage_log {
public:
  /// A call failed because the database could not be reached.
  void failed(std::string_view what);
  /// A call succeeded.
  void succeeded();
  /// Whether the last report was a failure.
  bool down() const;

private:
  mutable std::mutex mtx_;
  bool down_ = false;
  std::chrono::steady_clock::time_point since_;
};

} // namespace spool::pg
