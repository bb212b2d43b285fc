#include "runtime/store/task_input.hpp"

#include "runtime/strict_json.hpp"

#include <boost/json.hpp>

#include <cctype>
#include <cmath>
#include <cstdio>

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

std::string quote(std::string_view s) {
  constexpr std::size_t max_shown = 80;
  std::string out = "'";
  std::size_t i = 0;
  for (; i < s.size() && i < max_shown; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += "'";
  if (i < s.size())
    out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

namespace {

constexpr std::size_t max_problems_shown = 20;

std::string summarize(const std::vector<input_problem>& ps) {
  std::string out;
  std::size_t shown = 0;
  for (auto& p : ps) {
    if (shown == max_problems_shown) {
      out += "\n... and " + std::to_string(ps.size() - shown) + " more problem(s)";
      break;
    }
    if (!out.empty())
      out += "\n";
    out += to_string(p);
    ++shown;
  }
  return out;
}

bool allowed_channel_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'
         || c == ':' || c == '@';
}

constexpr std::size_t max_text = 256;

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
                     : quote(t.channel_id)
                         + " is not a channel id (1-128 letters, digits, '_', '-', '.', "
                           "':' or '@')"});
  if (auto p = parse_priority(priority))
    t.prio = *p;
  else
    out.push_back({line, "priority", quote(priority) + " is not one of high, normal, low"});
  auto text = [&](const std::string& value, const char* field) {
    if (value.size() > max_text)
      out.push_back({line, field, "is longer than 256 characters"});
    else if (value.find('\0') != std::string::npos)
      out.push_back({line, field, "contains U+0000 (\\u0000), which PostgreSQL refuses"});
  };
  text(t.client_id, "client_id");
  text(t.campaign_id, "campaign_id");
  if (t.idempotency_key) {
    if (t.idempotency_key->empty() || t.idempotency_key->size() > max_text)
      out.push_back({line, "idempotency_key", "must be 1-256 characters"});
    else
      text(*t.idempotency_key, "idempotency_key");
  }
}

/// Problems json::parse lets through in `text` (duplicate keys, U+0000),
/// each with its path prefixed by `prefix` ("payload" for --payload).
void check_strict(std::string_view text, const std::string& prefix, int line,
                  std::vector<input_problem>& out) {
  for (auto& f : strict_json_findings(text)) {
    auto field = f.path.empty() ? prefix : prefix.empty() ? f.path : prefix + "." + f.path;
    out.push_back({line, field, f.message});
  }
}

/// Stores a payload object, or says why it cannot be stored.
void take_payload(const json::value& v, int line, new_task& t,
                  std::vector<input_problem>& out) {
  if (!v.is_object()) {
    out.push_back({line, "payload", "must be a JSON object"});
    return;
  }
  auto text = json::serialize(v);
  if (text.size() > max_payload_bytes) {
    out.push_back({line, "payload",
                   "is " + std::to_string(text.size()) + " bytes of JSON; at most "
                     + std::to_string(max_payload_bytes) + " (1 MiB) per task"});
    return;
  }
  t.payload = std::move(text);
}

/// An unknown key as the field of a problem: as it is when short and
/// printable, else quoted and cut.
std::string field_name(std::string_view key) {
  bool plain = key.size() <= 80;
  for (char c : key)
    plain = plain && static_cast<unsigned char>(c) >= 0x20;
  return plain ? std::string{key} : quote(key);
}

/// A number for a message: "1e+08", "-3", "0.5".
std::string number_text(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", d);
  return buf;
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
  if (ec) {
    problems.push_back({0, "payload", "is not valid JSON: " + ec.message()});
  } else {
    auto before = problems.size();
    check_strict(payload_json, "payload", 0, problems);
    if (problems.size() == before)
      take_payload(v, 0, t, problems);
  }
  if (!problems.empty())
    throw input_error(std::move(problems));
  return t;
}

std::vector<new_task> parse_tasks_jsonl(std::istream& in) {
  static const char* const known =
    "unknown field (known: channel_id, priority, client_id, campaign_id, payload, "
    "idempotency_key, estimated_cost)";
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
    auto before = problems.size();
    check_strict(line, "", n, problems);
    if (problems.size() != before)
      continue; // the fields below would repeat what is already said
    new_task t;
    std::string priority = "normal";
    auto text_field = [&](const json::value& x, std::string_view key, std::string& dst) {
      if (x.is_string())
        dst = std::string{x.as_string()};
      else
        problems.push_back({n, std::string{key}, "must be a string"});
    };
    for (auto& [key, value] : v.as_object()) {
      if (key == "channel_id") {
        text_field(value, key, t.channel_id);
      } else if (key == "priority") {
        text_field(value, key, priority);
      } else if (key == "client_id") {
        text_field(value, key, t.client_id);
      } else if (key == "campaign_id") {
        text_field(value, key, t.campaign_id);
      } else if (key == "idempotency_key") {
        std::string k;
        text_field(value, key, k);
        t.idempotency_key = k;
      } else if (key == "payload") {
        take_payload(value, n, t, problems);
      } else if (key == "estimated_cost") {
        auto d = value.is_number() ? value.to_number<double>() : NAN;
        if (!value.is_number())
          problems.push_back({n, "estimated_cost", "must be a number from 0 to 1000000"});
        else if (!std::isfinite(d) || d < 0 || d > max_estimated_cost)
          problems.push_back({n, "estimated_cost", "must be from 0 to 1000000, got "
                                                     + number_text(d)});
        else
          t.estimated_cost = d;
      } else {
        problems.push_back({n, field_name(key), known});
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
