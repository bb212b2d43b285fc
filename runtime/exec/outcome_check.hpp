#pragma once
// Checks what an executor reports before it reaches SQL (DESIGN.md section
// 4, "Bad input"): one bad result fails its own run with a message naming
// the rule, and can never make the batch that records it fail.
//
// Pure logic: no CAF, no database.

#include <cstddef>

#include "runtime/config/config.hpp"
#include "runtime/outcome.hpp"

namespace spool::exec {

/// The largest cost the store's NUMERIC(14,6) cost columns hold. A limit
/// above it is lowered to it.
inline constexpr double cost_column_max = 99999999.999999;

/// What an outcome may carry.
struct outcome_limits {
  /// Largest cost in USD (inclusive). Defaults to 10000.
  double max_cost = 10000;
  /// Largest output JSON text in bytes (inclusive). Defaults to 1 MiB.
  std::size_t max_output_bytes = 1 << 20;
  /// Messages longer than this many bytes are cut, marker included.
  /// Defaults to 2000.
  std::size_t max_message_bytes = 2000;
};

/// The limits of a stage: its max_cost and max_output_bytes, and the
/// default max_message_bytes.
outcome_limits limits_of(const config::stage_config& stage);

/// Checks an executor's outcome before it reaches SQL, and returns it, or
/// a `permanent` failure naming the first rule it breaks and the value:
///
/// - cost: finite, >= 0 and <= min(max_cost, cost_column_max), e.g.
///   `result: "cost" 1000000000 exceeds max_cost 10000`. A rejected cost is
///   recorded as 0; the message keeps the reported value.
/// - output (ok outcomes only; others keep theirs unchecked): at most
///   max_output_bytes of valid UTF-8 that parses as one JSON object (strict
///   JSON: no comments, no trailing commas) nesting no deeper than Boost.JSON
///   parses by default (32 levels), with no NUL character in any decoded key
///   or string (`\u0000` escapes included; PostgreSQL's jsonb refuses them),
///   no unpaired UTF-16 surrogate escape, and every number within the range
///   of a double (no overflow to infinity, no non-zero value that rounds to
///   0), e.g. `result: "output" contains a NUL character (\u0000) at
///   output.caption`.
///
/// A rejected outcome carries output "{}", cost 0 and retry_after_s 0; its
/// message names the rule, followed by the reported message when there was
/// one. A cancelled outcome is never turned into a failure (the run is
/// handed back, not failed): a bad cost is recorded as 0 and noted in its
/// message.
///
/// Every outcome, valid or not, leaves with a message that is valid UTF-8
/// without NUL (other bytes become '?') and at most max_message_bytes long,
/// cut on a character boundary and ending in "… (truncated)" when cut; a
/// negative or NaN retry_after_s becomes 0 ("none"). A valid outcome passes
/// otherwise unchanged: its output text is not rewritten.
spool::outcome check_outcome(spool::outcome o, const outcome_limits& lim);

} // namespace spool::exec
