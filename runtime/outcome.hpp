#pragma once
// The closed set of things a stage execution can end in. Executors report one
// of these; the supervisor maps it to a store outcome through the retry policy.

#include <optional>
#include <string>
#include <string_view>

namespace spool {

/// How one execution of a stage ended. Error kinds are the error classes of
/// the executor contract ("class" in a command's error JSON).
enum class outcome_kind {
  ok,           // output produced
  transient,    // worth retrying after a backoff
  network,      // one immediate retry, then backoff
  rate_limited, // provider said 429: snooze by retry_after, no attempt counted
  permanent,    // retrying cannot help: fail at once
  timeout,      // killed at the stage timeout; counts as an attempt
  cancelled,    // stopped because the task was cancelled or the worker drains
};

std::string_view to_string(outcome_kind k) noexcept;
/// Parses an error class name ("transient", ...); nullopt when unknown.
/// "ok" and "cancelled" are not error classes and yield nullopt.
std::optional<outcome_kind> parse_error_class(std::string_view s) noexcept;

struct outcome {
  outcome_kind kind = outcome_kind::ok;
  /// The stage output, a JSON object in text form ("{}" when none).
  std::string output = "{}";
  /// Money spent by this execution in USD, whatever its kind.
  double cost = 0;
  /// For rate_limited: seconds to wait before the next try.
  double retry_after_s = 0;
  /// Human-readable error message (empty for ok).
  std::string message;
};

} // namespace spool
