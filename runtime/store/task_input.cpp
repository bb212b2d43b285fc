#include "runtime/store/task_input.hpp"

#include <boost/json.hpp>

#include <cctype>

namespace spool::store {

namespace json = boost::json;

std::string to_string(const input_problem& p) {
  std::string out;
  if (p.line > 0)
    out = "line " + std::to_string(p.line) + ": ";
  if (!p.field.empty())
    out += p.field + ": ";
  return out + p.message;
}

namespace {

std::string summarize(const std::vector<input_problem>& ps) {
  std::string out;
  for (auto& p : ps) {
    if (!out.empty())
      out += "\n";
    out += to_string(p);
  }
  return out;
}

bool allowed_channel_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'
         || c == ':' || c == '@';
}

constexpr size_t max_text = 256;

} // namespace

input_error::input_error(std::vector<input_problem> ps)
  : std::runtime_error(summarize(ps)), problems(std::move(ps)) {
}

bool valid_channel_id(std::string_view s) noexcept {
  if (s.empty() || s.size() > 128)
    return false;
  for (char c : s)
    if (!allowed_channel_char(c))
      return false;
  return true;
}

namespace {

/// Checks fields of one video, appending problems tagged with `line`.
void check_common(new_task& t, const std::string& priority, int line,
                  std::vector<input_problem>& out) {
  if (!valid_channel_id(t.channel_id))
    out.push_back({line, "channel_id",
                   t.channel_id.empty()
                     ? "is required"
                     : "'" + t.channel_id
                         + "' is not a channel id (1-128 letters, digits, '_', '-', '.', "
                           "':' or '@')"});
  if (auto p = parse_priority(priority))
    t.prio = *p;
  else
    out.push_back({line, "priority", "'" + priority + "' is not one of high, normal, low"});
  if (t.client_id.size() > max_text)
    out.push_back({line, "client_id", "is longer than 256 characters"});
  if (t.campaign_id.size() > max_text)
    out.push_back({line, "campaign_id", "is longer than 256 characters"});
  if (t.idempotency_key && (t.idempotency_key->empty() || t.idempotency_key->size() > max_text))
    out.push_back({line, "idempotency_key", "must be 1-256 characters"});
}

} // namespace

new_task make_task(const std::string& channel_id, const std::string& priority,
                   const std::string& client_id, const std::string& campaign_id,
                   const std::string& payload_json,
                   const std::optional<std::string>& idempotency_key) {
  new_task t;
  t.channel_id = channel_id;
  t.client_id = client_id;
  t.campaign_id = campaign_id;
  t.idempotency_key = idempotency_key;
  std::vector<input_problem> problems;
  check_common(t, priority, 0, problems);
  json::error_code ec;
  auto v = json::parse(payload_json, ec);
  if (ec)
    problems.push_back({0, "payload", "is not valid JSON: " + ec.message()});
  else if (!v.is_object())
    problems.push_back({0, "payload", "must be a JSON object"});
  else
    t.payload = json::serialize(v);
  if (!problems.empty())
    throw input_error(std::move(problems));
  return t;
}

std::vector<new_task> parse_tasks_jsonl(std::istream& in) {
  std::vector<new_task> tasks;
  std::vector<input_problem> problems;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos)
      continue;
    json::error_code ec;
    auto v = json::parse(line, ec);
    if (ec) {
      problems.push_back({n, "", "not valid JSON: " + ec.message()});
      continue;
    }
    if (!v.is_object()) {
      problems.push_back({n, "", "must be a JSON object"});
      continue;
    }
    new_task t;
    std::string priority = "normal";
    auto before = problems.size();
    auto text_field = [&](const json::value& x, std::string_view key, std::string& dst) {
      if (x.is_string())
        dst = std::string{x.as_string()};
      else
        problems.push_back({n, std::string{key}, "must be a string"});
    };
    for (auto& [key, value] : v.as_object()) {
      if (key == "channel_id")
        text_field(value, key, t.channel_id);
      else if (key == "priority")
        text_field(value, key, priority);
      else if (key == "client_id")
        text_field(value, key, t.client_id);
      else if (key == "campaign_id")
        text_field(value, key, t.campaign_id);
      else if (key == "idempotency_key") {
        std::string k;
        text_field(value, key, k);
        t.idempotency_key = k;
      } else if (key == "payload") {
        if (value.is_object())
          t.payload = json::serialize(value);
        else
          problems.push_back({n, "payload", "must be a JSON object"});
      } else if (key == "estimated_cost") {
        if (value.is_number() && value.to_number<double>() >= 0)
          t.estimated_cost = value.to_number<double>();
        else
          problems.push_back({n, "estimated_cost", "must be a non-negative number"});
      } else {
        problems.push_back({n, std::string{key},
                            "unknown field (known: channel_id, priority, client_id, "
                            "campaign_id, payload, idempotency_key, estimated_cost)"});
      }
    }
    check_common(t, priority, n, problems);
    if (problems.size() == before)
      tasks.push_back(std::move(t));
  }
  if (!problems.empty())
    throw input_error(std::move(problems));
  return tasks;
}

} // namespace spool::store
