#pragma once
// Validation of videos to enqueue, from the CLI flags or a JSONL file (one
// JSON object a line). Every problem names the line and the field; a file
// with any problem is rejected whole, so nothing is half-written. What passes
// here is accepted by PostgreSQL: no duplicate keys, no U+0000, amounts
// within the columns' range, payloads within max_payload_bytes.

#include "runtime/store/store.hpp"

#include <cstddef>
#include <istream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace spool::store {

/// The largest payload a task may carry, as compact JSON: 1 MiB.
inline constexpr std::size_t max_payload_bytes = 1 << 20;
/// The largest estimated_cost a task may carry (the column holds < 1e8).
inline constexpr double max_estimated_cost = 1'000'000;

/// One problem with the input: line 0 for CLI flags.
struct input_problem {
  int line = 0;
  std::string field;
  std::string message;
};
std::string to_string(const input_problem& p);

/// Every problem, one a line; what() lists the first 20 and counts the rest.
struct input_error : std::runtime_error {
  explicit input_error(std::vector<input_problem> ps);
  std::vector<input_problem> problems;
};

/// `s` in single quotes for a message, cut to about 80 characters (the
/// rest counted in bytes) and with control characters escaped: a bad value
/// of 5 MB is never echoed whole.
std::string quote(std::string_view s);

/// A channel id: 1-128 characters of letters, digits and _ - . : @ (YouTube
/// channel ids such as "UC..." and handles such as "@studio" both fit).
bool valid_channel_id(std::string_view s) noexcept;

/// Checks one video given field by field (CLI flags). Throws input_error.
new_task make_task(const std::string& channel_id, const std::string& priority,
                   const std::string& client_id, const std::string& campaign_id,
                   const std::string& payload_json,
                   const std::optional<std::string>& idempotency_key = std::nullopt);

/// Parses a JSONL stream of videos: {"channel_id": "...", "priority":
/// "high|normal|low", "client_id", "campaign_id", "payload": {...},
/// "idempotency_key", "estimated_cost": 0..1000000}. Blank lines are
/// skipped (an empty stream gives no tasks). Collects every problem before
/// throwing input_error.
std::vector<new_task> parse_tasks_jsonl(std::istream& in);

} // namespace spool::store
