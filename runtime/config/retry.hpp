#pragma once
// What to do after a stage run failed: retry after a backoff, snooze, or
// fail, by error class (DESIGN.md section 4, "Retries"). Also the timeout of
// one run. Pure functions; the supervisor applies the answers.

#include <chrono>
#include <random>

#include <boost/json/fwd.hpp>

#include "runtime/config/config.hpp"
#include "runtime/outcome.hpp"

namespace spool::config {

/// The answer of decide_retry.
struct retry_decision {
  enum class action {
    retry_at, // make the run ready again after `delay`
    snooze,   // rate limited: ready again after `delay`, attempt not counted
    fail,     // no more tries: the run fails
  };
  action act;
  /// How long until the run may start again; 0 for fail.
  std::chrono::milliseconds delay;
  /// Whether this failure used up an attempt.
  bool counts_attempt;

  bool operator==(const retry_decision&) const = default;
};

/// Backoff before the next try after the k-th counted failure (k >= 1):
/// min(max_delay_s, base_s * factor^(k-1)), then spread uniformly by
/// +-jitter of itself and clamped to [0, max_delay_s]. The defaults give
/// about 5 s, 15 s, 45 s. Draws from `rng` only when jitter > 0.
std::chrono::milliseconds backoff(const retry_policy& policy, int k,
                                  std::mt19937_64& rng);

/// Decides what follows a failed run of a stage.
///
/// `failed_attempts` counts the run's failed attempts including this one
/// (values below 1 are taken as 1); `retry_after_s` is what the provider
/// asked for with a rate_limited error (0: none).
/// - permanent: fail at once (counts).
/// - rate_limited: snooze for retry_after_s, or base_s when it is 0; counts
///   no attempt and is never limited by max_retries.
/// - transient, timeout, network: counted; once failed_attempts exceeds
///   max_retries the run fails; otherwise a network error on the run's first
///   failure retries at once (delay 0) and every other one waits
///   backoff(policy, failed_attempts).
/// - ok and cancelled are not failures: the answer is fail without counting
///   an attempt, so a caller's mistake can never loop.
retry_decision decide_retry(const retry_policy& policy, outcome_kind kind,
                            int failed_attempts, double retry_after_s,
                            std::mt19937_64& rng);

/// The timeout of one run: timeout_s, times the payload's numeric field
/// named by timeout_per when that is set and greater than 1 (a missing or
/// non-numeric field counts as 1). Saturates instead of overflowing.
std::chrono::milliseconds
effective_timeout(const stage_config& stage,
                  const boost::json::object& payload);

} // namespace spool::config
