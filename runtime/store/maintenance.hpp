#pragma once
// The stuck-job sweep: runs that stay running far past their stage's
// timeout (a wedged execution on a worker that still heartbeats) are
// rescued by the sweep itself: recorded as a timed-out attempt (the retry
// policy's limit applies) and handed back, fenced like any outcome, so the
// owner's next heartbeat learns it lost them and stops them. Stale waiting
// work is counted for the report.

#include <cstdint>
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
  double timeout_max_s = 0; // cap of the scaled timeout; 0: none
  double retry_base_s = 5;  // backoff before the rescued run may start again
};

struct sweep_report {
  int stuck = 0;           // running runs rescued now
  int stale_ready = 0;     // ready or scheduled for more than `stale_after_s`
  int stale_approval = 0;  // tasks awaiting approval for more than that
};

/// A run is stuck when it has been running longer than its effective
/// timeout plus `margin_s`.
sweep_report sweep_stuck(pg::connection& conn, const std::vector<stage_limit>& limits,
                         double margin_s, double stale_after_s);

/// The running runs that are stuck now (what the next sweep would rescue).
int64_t count_stuck(pg::connection& conn, const std::vector<stage_limit>& limits,
                    double margin_s);

} // namespace spool::store
