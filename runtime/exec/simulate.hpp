#pragma once
// The `simulate` executor: draws a latency and an outcome for one execution of
// a stage from a seeded distribution. It serves the demo, tests and
// benchmarks. Pure and deterministic: the same (seed, task, stage, attempt)
// always gives the same latency and outcome, on any thread, in any order.

#include "runtime/outcome.hpp"

#include <chrono>
#include <cstdint>
#include <string_view>

namespace spool::exec {

/// Settings of the simulate executor. A plain value; the caller adapts it
/// from the stage's configuration.
struct simulate_settings {
  /// The latency distribution. Defaults to fixed.
  enum class dist { fixed, uniform, lognormal } latency = dist::fixed;
  /// For fixed: the latency in ms. Defaults to 0.
  double fixed_ms = 0;
  /// For uniform: latency drawn from [min_ms, max_ms). Defaults to 0 and 0;
  /// bounds given in the wrong order are swapped.
  double min_ms = 0, max_ms = 0;
  /// For lognormal: median and 99th percentile in ms; mu = ln(p50),
  /// sigma = (ln(p99) - ln(p50)) / 2.3263. A p99 at or below p50 gives the
  /// fixed latency p50. Defaults to 0 (no latency).
  double p50_ms = 0, p99_ms = 0;
  /// Probability of each injected error class, each in [0, 1] (values out of
  /// range are clamped). One uniform draw is compared against their running
  /// sum in this order; whatever is left over is ok. Defaults to 0 (never).
  double p_transient = 0, p_network = 0, p_rate_limited = 0, p_permanent = 0,
         p_timeout = 0;
  /// Probability that the executing actor crashes instead of reporting
  /// (chaos testing of supervision); drawn after the error classes.
  /// Defaults to 0.
  double p_crash = 0;
  /// Retry-After reported by an injected rate_limited error. Defaults to 2 s.
  double retry_after_s = 2;
  /// Money charged by each ok call, in USD. Injected errors cost nothing.
  /// Defaults to 0.
  double cost = 0;
  /// Seed of the draws; change it for a different but repeatable run.
  /// Defaults to 1.
  uint64_t seed = 1;
};

/// One simulated execution: how long it takes and how it ends.
struct simulated {
  /// How long the caller should let the execution take (never negative).
  std::chrono::microseconds latency{0};
  /// ok: output {"simulated":true,"latency_ms":<ms>} and the settings' cost.
  /// Errors: an empty output "{}", a message naming the injected class, and
  /// for rate_limited the settings' retry_after_s.
  spool::outcome result;
  /// The caller should crash (throw) instead of reporting `result`.
  bool crash = false;
};

/// Draws the latency and outcome of attempt `attempt` of `stage` for task
/// `task_id`. Thread-safe (no shared state); allocates at most the output
/// or message string. Uses its own PRNG, so results are the same on every
/// platform and standard library.
simulated simulate(const simulate_settings& settings, int64_t task_id,
                   std::string_view stage, int attempt);

} // namespace spool::exec
