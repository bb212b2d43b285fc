#pragma once
// The stuck-job sweep: runs that stay running far past their stage's
// timeout (a hung worker that still heartbeats) get their lease expired, so
// the rescuer returns them to the queue as a failed attempt; stale waiting
// work is counted for the report.

#include <string>
#include <vector>

namespace spool::pg {
class connection;
}

namespace spool::store {

struct stage_limit {
  std::string stage;
  double timeout_s;
  std::string timeout_per; // payload field scaling the timeout, or empty
};

struct sweep_report {
  int stuck = 0;        // leases expired now
  int stale_ready = 0;  // ready or scheduled for more than `stale_after_s`
};

/// A run is stuck when it has been running longer than its effective
/// timeout plus `margin_s`.
sweep_report sweep_stuck(pg::connection& conn, const std::vector<stage_limit>& limits,
                         double margin_s, double stale_after_s);

} // namespace spool::store
