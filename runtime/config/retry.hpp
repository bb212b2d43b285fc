#pragma once
// What to do after a stage run failed: retry after a backoff, snooze, or
// fail, by error class (DESIGN.md section 4, "Retries"). Also the timeout of
// one run. Pure functions; the supervisor applies the answers.

#include <chrono>
#include <random>
#include <string>

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
  /// Why, in words naming the rule and its values, when the run fails or a
  /// snooze was capped (e.g. "rate limited for a total of 86,390 s; a
  /// further 30 s snooze would exceed retry.max_snoozed_total_s 86400");
  /// empty for an ordinary retry or snooze. Callers may use it as the run's
  /// error message.
  std::string reason = {};

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
/// asked for with a rate_limited error (0, negative or NaN: none);
/// `snoozed_s` is the time the run has already spent snoozed for rate
/// limits (negative or NaN: 0).
/// - permanent: fail at once (counts).
/// - rate_limited: snooze for retry_after_s, or base_s when it names none,
///   capped at max_snooze_s (the reason then says so); counts no attempt and
///   is never limited by max_retries. When snoozed_s plus that snooze would
///   exceed max_snoozed_total_s the run fails instead (counts no attempt;
///   the reason names retry.max_snoozed_total_s).
/// - transient, timeout, network: counted; once failed_attempts exceeds
///   max_retries the run fails; otherwise a network error on the run's first
///   failure retries at once (delay 0) and every other one waits
///   backoff(policy, failed_attempts).
/// - ok and cancelled are not failures: the answer is fail without counting
///   an attempt, so a caller's mistake can never loop.
retry_decision decide_retry(const retry_policy& policy, outcome_kind kind,
                            int failed_attempts, double retry_after_s,
                            double snoozed_s, std::mt19937_64& rng);

/// The timeout of one run: timeout_s, times the payload's numeric field
/// named by timeout_per when that is set and greater than 1 (a missing,
/// non-numeric, non-finite or negative field counts as 1), and never more
/// than timeout_max_s. Never overflows.
std::chrono::milliseconds
effective_timeout(const stage_config& stage,
                  const boost::json::object& payload);

} // namespace spool::config
