#include "runtime/exec/contract.hpp"

#include "runtime/utf8.hpp"

#include <boost/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <optional>
#include <string_view>

namespace spool::exec {

namespace json = boost::json;

namespace {

using ending = command_result::ending;

constexpr std::string_view error_classes =
  "transient, network, rate_limited, permanent, timeout";

/// `text` parsed as a JSON object, or an empty object.
json::object object_or_empty(std::string_view text) {
  json::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object())
    return {};
  return std::move(v.as_object());
}

bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
         || c == '\v';
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && is_space(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && is_space(s.back()))
    s.remove_suffix(1);
  return s;
}

/// The last line of `s` that is not blank, trimmed; empty when none.
std::string_view last_nonempty_line(std::string_view s) noexcept {
  s = trim(s);
  auto nl = s.find_last_of('\n');
  return nl == std::string_view::npos ? s : trim(s.substr(nl + 1));
}

/// The stderr tail for a message: a cut multi-byte character at its start
/// dropped, whitespace trimmed.
std::string_view stderr_for_message(const std::string& tail) noexcept {
  std::string_view s = tail;
  for (int i = 0; i < 3 && !s.empty()
                  && (static_cast<unsigned char>(s.front()) & 0xC0) == 0x80;
       ++i)
    s.remove_prefix(1);
  return trim(s);
}

/// "exit code 3", "killed by signal 9 (SIGKILL)", or empty for exit code 0.
std::string exit_status(const command_result& r) {
  if (r.how == ending::exited && r.exit_code == 0)
    return {};
  if (r.signal != 0) {
    std::string s = "killed by signal " + std::to_string(r.signal);
    if (const char* abbrev = ::sigabbrev_np(r.signal))
      s += std::string{" (SIG"} + abbrev + ")";
    return s;
  }
  return "exit code " + std::to_string(r.exit_code);
}

/// `problem`, then the exit status (unless `add_status` is false) and the
/// stderr tail when there are any.
std::string with_context(std::string problem, const command_result& r,
                         bool add_status = true) {
  if (auto st = exit_status(r); add_status && !st.empty())
    problem += "; " + st;
  if (r.stdout_truncated)
    problem += "; stdout truncated to its last "
               + std::to_string(r.stdout_data.size()) + " bytes";
  if (auto err = stderr_for_message(r.stderr_tail); !err.empty()) {
    problem += "; stderr: ";
    problem += err;
  }
  return sanitize_utf8(problem);
}

/// Spawn errors that a later try may not hit: out of processes, fds or
/// memory, or the program file being written right now.
bool lacks_resources(int error_code) noexcept {
  switch (error_code) {
    case EAGAIN:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case ETXTBSY:
    case EINTR:
      return true;
    default:
      return false;
  }
}

spool::outcome make(outcome_kind kind, std::string message) {
  spool::outcome o;
  o.kind = kind;
  o.message = std::move(message);
  return o;
}

/// A non-negative finite number at `key`: nullopt when absent, an error
/// message in `problem` when present but invalid.
std::optional<double> non_negative(const json::object& obj,
                                   std::string_view key,
                                   std::string& problem) {
  auto it = obj.find(key);
  if (it == obj.end())
    return std::nullopt;
  const json::value& v = it->value();
  double d = -1;
  if (v.is_double())
    d = v.get_double();
  else if (v.is_int64())
    d = static_cast<double>(v.get_int64());
  else if (v.is_uint64())
    d = static_cast<double>(v.get_uint64());
  if (!v.is_number() || !std::isfinite(d) || d < 0) {
    problem = "result: \"" + std::string{key}
              + "\" must be a non-negative number, got "
              + json::serialize(v);
    return std::nullopt;
  }
  return d;
}

/// Validates the parsed result object; `problem` names the first error.
spool::outcome from_result_object(const json::object& obj,
                                  std::string& problem) {
  spool::outcome o;
  auto status_it = obj.find("status");
  const json::string* status = status_it == obj.end()
                                 ? nullptr
                                 : status_it->value().if_string();
  if (!status || (*status != "ok" && *status != "error")) {
    problem = R"(result: "status" must be "ok" or "error")";
    return o;
  }
  if (auto cost = non_negative(obj, "cost", problem))
    o.cost = *cost;
  if (!problem.empty())
    return o;

  if (*status == "ok") {
    o.kind = outcome_kind::ok;
    if (auto it = obj.find("output"); it != obj.end()) {
      if (!it->value().is_object()) {
        problem = R"(result: "output" must be an object)";
        return o;
      }
      o.output = json::serialize(it->value());
    }
    return o;
  }

  auto class_it = obj.find("class");
  const json::string* cls = class_it == obj.end()
                              ? nullptr
                              : class_it->value().if_string();
  std::optional<outcome_kind> kind;
  if (cls)
    kind = parse_error_class(std::string_view{cls->data(), cls->size()});
  if (!kind) {
    problem = "result: \"class\" must be one of ";
    problem += error_classes;
    problem += ", got ";
    problem += class_it == obj.end() ? std::string{"nothing"}
                                     : json::serialize(class_it->value());
    return o;
  }
  o.kind = *kind;
  if (auto after = non_negative(obj, "retry_after_s", problem))
    o.retry_after_s = *after;
  if (!problem.empty())
    return o;
  if (auto it = obj.find("message"); it != obj.end()) {
    if (auto* s = it->value().if_string())
      o.message = sanitize_utf8(std::string_view{s->data(), s->size()});
    else
      o.message = sanitize_utf8(json::serialize(it->value()));
  }
  if (o.message.empty())
    o.message = "the command reported a " + std::string{to_string(o.kind)}
                + " error";
  return o;
}

} // namespace

std::string idempotency_key(int64_t task_id, std::string_view stage,
                            int call) {
  std::string key = std::to_string(task_id);
  key += ':';
  key += stage;
  key += ':';
  key += std::to_string(call);
  return key;
}

std::string make_job_input(const job_input& in) {
  json::object o;
  o["task_id"] = in.task_id;
  o["stage"] = in.stage;
  o["attempt"] = in.attempt;
  o["idempotency_key"] =
    idempotency_key(in.task_id, in.stage, in.call > 0 ? in.call : in.attempt);
  o["work_dir"] = in.work_dir;
  o["data_dir"] = in.data_dir;
  o["channel_id"] = in.channel_id;
  o["priority"] = in.priority;
  o["payload"] = object_or_empty(in.payload_json);
  if (in.inputs.empty() && !in.inputs_json.empty()) {
    o["inputs"] = object_or_empty(in.inputs_json);
  } else {
    json::object inputs;
    for (const auto& [stage, output] : in.inputs)
      inputs[stage] = object_or_empty(output);
    o["inputs"] = std::move(inputs);
  }
  // The brand guidelines and campaign brief, and prompt_context, one
  // string of them for a prompt: always there, empty when the task has none.
  json::error_code ec;
  auto ctx = in.context_json.empty() ? json::value{} : json::parse(in.context_json, ec);
  if (!ec && ctx.is_object())
    o["context"] = std::move(ctx);
  else
    o["context"] = json::object{{"brand", nullptr}, {"brief", nullptr}, {"prompt_context", ""}};
  return json::serialize(o);
}

spool::outcome parse_command_result(const command_result& r) {
  switch (r.how) {
    case ending::spawn_failed:
      return make(lacks_resources(r.error_code) ? outcome_kind::transient
                                                : outcome_kind::permanent,
                  sanitize_utf8("cannot start the command: " + r.error));
    case ending::timed_out:
      return make(outcome_kind::timeout,
                  with_context("timed out after "
                                 + std::to_string(r.elapsed.count()) + " ms",
                               r));
    case ending::cancelled:
      return make(outcome_kind::cancelled, "cancelled");
    case ending::exited:
    case ending::signaled:
      break;
  }

  auto line = last_nonempty_line(r.stdout_data);
  if (line.empty())
    return make(outcome_kind::transient,
                with_context("result: no JSON object on stdout", r));
  if (auto bad = invalid_utf8_at(line); bad != std::string_view::npos)
    return make(outcome_kind::transient,
                with_context("result: the last line of stdout is not valid UTF-8 (byte "
                               + std::to_string(bad) + ")",
                             r));
  json::error_code ec;
  json::value v = json::parse(line, ec);
  if (ec || !v.is_object()) {
    std::string problem = ec ? "result: the last line of stdout is not JSON ("
                                 + ec.message() + ")"
                             : "result: the last line of stdout is not a "
                               "JSON object";
    constexpr std::size_t shown = 120;
    problem += ": ";
    problem += line.substr(0, shown);
    if (line.size() > shown)
      problem += "...";
    return make(outcome_kind::transient, with_context(std::move(problem), r));
  }
  std::string problem;
  auto o = from_result_object(v.as_object(), problem);
  if (!problem.empty()) {
    auto bad = make(outcome_kind::transient,
                    with_context(std::move(problem), r));
    bad.cost = o.cost; // a valid cost was spent all the same
    return bad;
  }
  bool clean_exit = r.how == ending::exited && r.exit_code == 0;
  if (o.kind == outcome_kind::ok && !clean_exit) {
    auto cost = o.cost;
    o = make(outcome_kind::transient,
             with_context(exit_status(r) + " with status ok", r, false));
    o.cost = cost;
  }
  return o;
}

} // namespace spool::exec
