#pragma once
// Validation of videos to enqueue, from the CLI flags or a JSONL file (one
// JSON object a line). Every problem names the line and the field; a file
// with any problem is rejected whole, so nothing is half-written.

#include "runtime/store/store.hpp"

#include <istream>
#include <stdexcept>
#include <string>
#include <vector>

namespace spool::store {

/// One problem with the input: line 0 for CLI flags.
struct input_problem {
  int line = 0;
  std::string field;
  std::string message;
};
std::string to_string(const input_problem& p);

struct input_error : std::runtime_error {
  explicit input_error(std::vector<input_problem> ps);
  std::vector<input_problem> problems;
};

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
/// "idempotency_key", "estimated_cost"}. Blank lines are skipped. Collects
/// every problem before throwing input_error.
std::vector<new_task> parse_tasks_jsonl(std::istream& in);

} // namespace spool::store
