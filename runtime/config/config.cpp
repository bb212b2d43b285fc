#include "runtime/config/config.hpp"

#include "runtime/http/server.hpp"
#include "runtime/strict_json.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <system_error>
#include <type_traits>
#include <utility>

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/parse_options.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/stream_parser.hpp>
#include <boost/json/value.hpp>

namespace json = boost::json;

namespace spool::config {

// -- duration helpers ---------------------------------------------------------

std::chrono::milliseconds to_duration(double seconds) noexcept {
  using rep = std::chrono::milliseconds::rep;
  if (!(seconds > 0)) // also NaN
    return std::chrono::milliseconds{0};
  auto ms = seconds * 1000.0; // +inf for huge values, never UB
  constexpr auto limit = static_cast<double>(max_duration.count());
  if (!(ms < limit))
    return max_duration;
  return std::chrono::milliseconds{static_cast<rep>(std::llround(ms))};
}

// -- enums --------------------------------------------------------------------

namespace {

template <class E>
struct enum_names;

template <>
struct enum_names<executor_kind> {
  static constexpr std::array<std::pair<std::string_view, executor_kind>, 2>
    items{{{"simulate", executor_kind::simulate},
           {"command", executor_kind::command}}};
};

template <>
struct enum_names<latency_dist> {
  static constexpr std::array<std::pair<std::string_view, latency_dist>, 3>
    items{{{"fixed", latency_dist::fixed},
           {"uniform", latency_dist::uniform},
           {"lognormal", latency_dist::lognormal}}};
};

template <class E>
std::string_view enum_to_string(E e) noexcept {
  for (const auto& [name, value] : enum_names<E>::items)
    if (value == e)
      return name;
  return "unknown";
}

} // namespace

std::string_view to_string(executor_kind k) noexcept {
  return enum_to_string(k);
}

std::string_view to_string(latency_dist d) noexcept {
  return enum_to_string(d);
}

std::string_view to_string(property_type t) noexcept {
  switch (t) {
    case property_type::integer:
      return "int";
    case property_type::number:
      return "double";
    case property_type::boolean:
      return "bool";
    case property_type::string:
      return "string";
    case property_type::string_list:
      return "string list";
    case property_type::string_map:
      return "string map";
    case property_type::number_map:
      return "number map";
    case property_type::object:
      return "object";
    case property_type::object_list:
      return "object list";
  }
  return "unknown";
}

double error_rates::of(outcome_kind k) const noexcept {
  switch (k) {
    case outcome_kind::transient:
      return transient;
    case outcome_kind::network:
      return network;
    case outcome_kind::rate_limited:
      return rate_limited;
    case outcome_kind::permanent:
      return permanent;
    case outcome_kind::timeout:
      return timeout;
    case outcome_kind::ok:
    case outcome_kind::cancelled:
      break;
  }
  return 0;
}

namespace {

// -- JSON values: text, kinds, numbers ----------------------------------------

/// Shortest text that reads back as the same double: whole numbers below
/// 2^53 as integers ("300000", not "3e+05"), others like "0.2" or "1e+300".
std::string format_number(double d) {
  if (std::trunc(d) == d && std::fabs(d) < 0x1p53)
    return std::to_string(static_cast<std::int64_t>(d));
  std::array<char, 64> buf;
  auto res = std::to_chars(buf.data(), buf.data() + buf.size(), d);
  return std::string(buf.data(), res.ptr);
}

/// "a string", "a number", ... for "must be X, got <kind>" messages.
std::string_view kind_phrase(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return "a number";
    case json::kind::string:
      return "a string";
    case json::kind::array:
      return "an array";
    case json::kind::object:
      return "an object";
  }
  return "unknown";
}

std::optional<double> as_number(const json::value& v) {
  switch (v.kind()) {
    case json::kind::int64:
      return static_cast<double>(v.get_int64());
    case json::kind::uint64:
      return static_cast<double>(v.get_uint64());
    case json::kind::double_:
      return v.get_double();
    default:
      return std::nullopt;
  }
}

/// Whether v is a whole number (5, or 5.0 written as a double).
bool is_integral(const json::value& v) {
  if (v.is_int64() || v.is_uint64())
    return true;
  if (!v.is_double())
    return false;
  auto d = v.get_double();
  return std::isfinite(d) && std::trunc(d) == d && std::fabs(d) < 0x1p53;
}

/// The value as it appears in a "got ..." message.
std::string value_text(const json::value& v) {
  if (auto n = as_number(v))
    return v.is_double() ? format_number(*n) : json::serialize(v);
  if (v.is_string())
    return "'" + std::string(v.get_string()) + "'";
  if (v.is_bool())
    return v.get_bool() ? "true" : "false";
  return std::string(kind_phrase(v));
}

/// Compact JSON with numbers in their shortest form (Boost writes 0.2 as
/// "2E-1"). Deterministic: the input of the version hash.
void write_json(std::string& out, const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      out += "null";
      break;
    case json::kind::bool_:
      out += v.get_bool() ? "true" : "false";
      break;
    case json::kind::int64:
      out += std::to_string(v.get_int64());
      break;
    case json::kind::uint64:
      out += std::to_string(v.get_uint64());
      break;
    case json::kind::double_:
      out += format_number(v.get_double());
      break;
    case json::kind::string:
      out += json::serialize(v.get_string());
      break;
    case json::kind::array: {
      out += '[';
      bool first = true;
      for (const auto& x : v.get_array()) {
        if (!std::exchange(first, false))
          out += ',';
        write_json(out, x);
      }
      out += ']';
      break;
    }
    case json::kind::object: {
      out += '{';
      bool first = true;
      for (const auto& kv : v.get_object()) {
        if (!std::exchange(first, false))
          out += ',';
        out += json::serialize(kv.key());
        out += ':';
        write_json(out, kv.value());
      }
      out += '}';
      break;
    }
  }
}

// -- conversion between JSON and struct fields --------------------------------
// from_json runs only on values that passed the property's checks.

void from_json(const json::value& v, int& out) {
  out = static_cast<int>(*as_number(v));
}

void from_json(const json::value& v, std::uint64_t& out) {
  if (v.is_uint64())
    out = v.get_uint64();
  else if (v.is_int64())
    out = static_cast<std::uint64_t>(v.get_int64());
  else
    out = static_cast<std::uint64_t>(v.get_double());
}

void from_json(const json::value& v, double& out) {
  out = *as_number(v);
}

void from_json(const json::value& v, bool& out) {
  out = v.get_bool();
}

void from_json(const json::value& v, std::string& out) {
  out = std::string(v.get_string());
}

void from_json(const json::value& v, std::vector<std::string>& out) {
  out.clear();
  for (const auto& x : v.get_array())
    out.emplace_back(x.get_string());
}

void from_json(const json::value& v, std::map<std::string, std::string>& out) {
  out.clear();
  for (const auto& kv : v.get_object())
    out.emplace(std::string(kv.key()), std::string(kv.value().get_string()));
}

void from_json(const json::value& v, std::map<std::string, double>& out) {
  out.clear();
  for (const auto& kv : v.get_object())
    out.emplace(std::string(kv.key()), *as_number(kv.value()));
}

template <class E>
  requires std::is_enum_v<E>
void from_json(const json::value& v, E& out) {
  for (const auto& [name, value] : enum_names<E>::items)
    if (v.get_string() == name)
      out = value;
}

json::value to_json(int x) {
  return static_cast<std::int64_t>(x);
}

json::value to_json(std::uint64_t x) {
  return x;
}

json::value to_json(double x) {
  return x;
}

json::value to_json(bool x) {
  return x;
}

json::value to_json(const std::string& x) {
  return json::string(x);
}

json::value to_json(const std::vector<std::string>& xs) {
  json::array arr;
  for (const auto& x : xs)
    arr.emplace_back(json::string(x));
  return arr;
}

json::value to_json(const std::map<std::string, std::string>& xs) {
  json::object obj;
  for (const auto& [k, v] : xs)
    obj[k] = json::string(v);
  return obj;
}

json::value to_json(const std::map<std::string, double>& xs) {
  json::object obj;
  for (const auto& [k, v] : xs)
    obj[k] = v;
  return obj;
}

template <class E>
  requires std::is_enum_v<E>
json::value to_json(E e) {
  return json::string(enum_to_string(e));
}

/// The property type that stores a T.
template <class T>
constexpr property_type type_of() {
  if constexpr (std::is_same_v<T, bool>)
    return property_type::boolean;
  else if constexpr (std::is_same_v<T, double>)
    return property_type::number;
  else if constexpr (std::is_integral_v<T>)
    return property_type::integer;
  else if constexpr (std::is_same_v<T, std::string> || std::is_enum_v<T>)
    return property_type::string;
  else if constexpr (std::is_same_v<T, std::vector<std::string>>)
    return property_type::string_list;
  else if constexpr (std::is_same_v<T, std::map<std::string, double>>)
    return property_type::number_map;
  else
    return property_type::string_map;
}

// -- the registry -------------------------------------------------------------

template <class M>
struct member_traits;

template <class C, class T>
struct member_traits<T C::*> {
  using class_type = C;
  using value_type = T;
};

/// Reaches a field through a chain of member pointers:
/// `member_path<&stage_config::retry, &retry_policy::factor>::in(s)`.
template <auto First, auto... Rest>
struct member_path {
  using scope = typename member_traits<decltype(First)>::class_type;

  template <class S>
  static auto& in(S& s) {
    return ((s.*First) .* ... .*Rest);
  }
};

/// A rule beyond type and bounds; returns an error message, empty when fine.
using check_fn = std::string (*)(const json::value&);

/// A key's value must equal `value` for the key to be allowed.
struct condition {
  std::string key; // dotted, in the same scope; empty: always allowed
  std::string_view value;
};

/// One declared property of scope S (snapshot for top-level keys,
/// stage_config for keys inside a stage, provider_config for keys inside a
/// provider). Built with the chainable setters below; `effect` defaults to
/// restart (opt in to live change with .live(), or mark a key copied into
/// each task at enqueue with .new_tasks()).
template <class S>
struct property {
  std::string key; // dotted, relative to the scope
  property_type type = property_type::object;
  std::string_view default_text; // JSON; empty: required or object
  json::value default_value;     // parsed default_text, null when none
  bool required_ = false;
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_open = false; // min itself is excluded
  std::vector<std::string_view> choices;
  check_fn check_ = nullptr;
  std::string_view check_text;
  condition when_;
  change_effect effect = change_effect::restart;
  std::string_view description;
  void (*set)(S&, const json::value&) = nullptr; // null for objects
  json::value (*get)(const S&) = nullptr;        // null for objects
  /// For an optional object ("rate", "fallback"): whether `s` has it; its
  /// keys apply only then. Null for an object that is always there.
  bool (*present)(const S&) = nullptr;
  /// For an optional object: records that the file gives it (has_rate =
  /// true); null when presence follows from a key inside it.
  void (*mark_present)(S&) = nullptr;

  property& def(std::string_view json_text) {
    default_text = json_text;
    default_value = json::parse(json_text);
    return *this;
  }
  property& required() {
    required_ = true;
    return *this;
  }
  property& at_least(double lo) {
    min = lo;
    return *this;
  }
  property& above(double lo) {
    min = lo;
    min_open = true;
    return *this;
  }
  property& between(double lo, double hi) {
    min = lo;
    max = hi;
    return *this;
  }
  property& at_most(double hi) {
    max = hi;
    return *this;
  }
  property& check(check_fn fn, std::string_view text) {
    check_ = fn;
    check_text = text;
    return *this;
  }
  /// States a rule checked across keys (validator::check_*), for docs.
  property& rule(std::string_view text) {
    check_text = text;
    return *this;
  }
  property& when(std::string k, std::string_view v) {
    when_ = condition{std::move(k), v};
    return *this;
  }
  /// Makes an object optional: absent from the file (and from the
  /// canonical JSON) unless `is_present`; `mark` records its presence
  /// when the file gives it.
  property& optional_object(bool (*is_present)(const S&),
                            void (*mark)(S&) = nullptr) {
    present = is_present;
    mark_present = mark;
    return *this;
  }
  property& live() {
    effect = change_effect::live;
    return *this;
  }
  /// The key is copied into each task when it is enqueued (spool_enqueue
  /// stores it in the task's stage_runs): a change reaches only tasks
  /// enqueued after it.
  property& new_tasks() {
    effect = change_effect::new_tasks;
    return *this;
  }
  property& doc(std::string_view text) {
    description = text;
    return *this;
  }

  bool is_leaf() const noexcept {
    return set != nullptr;
  }

  /// Bounds and choices in words, for docs.
  std::string constraint() const {
    std::string out;
    if (!choices.empty()) {
      out = "one of ";
      for (std::size_t i = 0; i < choices.size(); ++i)
        out += (i == 0 ? "" : ", ") + std::string(choices[i]);
    } else if (std::isfinite(min) && std::isfinite(max)) {
      out = min_open ? "> " + format_number(min) + " and <= "
                         + format_number(max)
                     : format_number(min) + ".." + format_number(max);
    } else if (std::isfinite(min)) {
      out = (min_open ? "> " : ">= ") + format_number(min);
    } else if (std::isfinite(max)) {
      out = "<= " + format_number(max);
    }
    if (!check_text.empty())
      out += out.empty() ? std::string(check_text)
                         : "; " + std::string(check_text);
    return out;
  }
};

/// Declares a leaf property stored at the member path Ms...
template <auto... Ms>
auto field(std::string key) {
  using path = member_path<Ms...>;
  using scope = typename path::scope;
  using value_type =
    std::remove_cvref_t<decltype(path::in(std::declval<scope&>()))>;
  property<scope> p;
  p.key = std::move(key);
  p.type = type_of<value_type>();
  if constexpr (std::is_enum_v<value_type>)
    for (const auto& item : enum_names<value_type>::items)
      p.choices.push_back(item.first);
  p.set = [](scope& s, const json::value& v) { from_json(v, path::in(s)); };
  p.get = [](const scope& s) { return to_json(path::in(s)); };
  return p;
}

/// Declares an object (a group of keys) or the list of stages.
template <class S>
property<S> group(std::string key, property_type type) {
  property<S> p;
  p.key = std::move(key);
  p.type = type;
  return p;
}

std::string check_not_empty(const json::value& v) {
  if (v.is_string() && v.get_string().empty())
    return "must not be empty";
  if (v.is_array() && v.get_array().empty())
    return "must not be empty";
  return {};
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_lower(char c) {
  return c >= 'a' && c <= 'z';
}

bool is_alpha(char c) {
  return is_lower(c) || (c >= 'A' && c <= 'Z');
}

/// A stage or provider name: [a-z][a-z0-9_]{0,62}.
std::string check_name(const json::value& v) {
  auto s = std::string_view(v.get_string());
  auto ok = !s.empty() && s.size() <= 63 && is_lower(s[0])
            && std::all_of(s.begin(), s.end(), [](char c) {
                 return is_lower(c) || is_digit(c) || c == '_';
               });
  if (ok)
    return {};
  return "must match [a-z][a-z0-9_]{0,62}, got " + value_text(v);
}

/// Empty, or a payload field name: [A-Za-z_][A-Za-z0-9_]{0,62}.
std::string check_field_name(const json::value& v) {
  auto s = std::string_view(v.get_string());
  auto ok = s.empty()
            || (s.size() <= 63 && !is_digit(s[0])
                && std::all_of(s.begin(), s.end(), [](char c) {
                     return is_alpha(c) || is_digit(c) || c == '_';
                   }));
  if (ok)
    return {};
  return "must be empty or match [A-Za-z_][A-Za-z0-9_]{0,62}, got "
         + value_text(v);
}

/// Each element a payload field name: [A-Za-z_][A-Za-z0-9_]{0,62}.
std::string check_field_names(const json::value& v) {
  const auto& arr = v.get_array();
  for (std::size_t i = 0; i < arr.size(); ++i) {
    if (arr[i].get_string().empty())
      return "element " + std::to_string(i) + " must name a payload field, got \"\"";
    if (auto msg = check_field_name(arr[i]); !msg.empty())
      return "element " + std::to_string(i) + " " + msg;
  }
  return {};
}

/// A payload field name, not empty.
std::string check_required_field_name(const json::value& v) {
  if (v.get_string().empty())
    return "must name a payload field";
  return check_field_name(v);
}

/// Client ids as tasks carry them: 1..128 characters, no control characters.
std::string check_client_ids(const json::value& v) {
  for (const auto& kv : v.get_object()) {
    auto k = std::string_view(kv.key());
    if (k.empty() || k.size() > 128
        || std::any_of(k.begin(), k.end(),
                       [](char c) { return static_cast<unsigned char>(c) < 0x20; }))
      return "keys must be client ids of 1..128 characters without control "
             "characters, got " + value_text(json::string(k));
  }
  return {};
}

/// A time of day "HH:MM", 00:00..23:59.
std::string check_clock_time(const json::value& v) {
  auto s = std::string_view(v.get_string());
  auto ok = s.size() == 5 && is_digit(s[0]) && is_digit(s[1]) && s[2] == ':'
            && is_digit(s[3]) && is_digit(s[4])
            && (s[0] - '0') * 10 + (s[1] - '0') <= 23
            && (s[3] - '0') * 10 + (s[4] - '0') <= 59;
  if (ok)
    return {};
  return "must be a time of day HH:MM (00:00..23:59), got " + value_text(v);
}

/// The characters of an IANA time zone name ("America/Los_Angeles",
/// "Etc/GMT+8"); whether the zone exists is for PostgreSQL to say.
std::string check_time_zone(const json::value& v) {
  auto s = std::string_view(v.get_string());
  if (s.empty())
    return "must not be empty";
  auto ok = std::all_of(s.begin(), s.end(), [](char c) {
    return is_alpha(c) || is_digit(c) || c == '_' || c == '+' || c == '/'
           || c == '-';
  });
  if (ok)
    return {};
  return "must be a time zone name made of [A-Za-z0-9_+/-] (e.g. "
         "America/Los_Angeles), got " + value_text(v);
}

std::string check_argv(const json::value& v) {
  const auto& arr = v.get_array();
  if (arr.empty())
    return "must name a program: got an empty list";
  if (arr[0].get_string().empty())
    return "must name a program: argv[0] is empty";
  return {};
}

/// Each element an environment variable name: [A-Za-z_][A-Za-z0-9_]*.
std::string check_env_names(const json::value& v) {
  const auto& arr = v.get_array();
  for (std::size_t i = 0; i < arr.size(); ++i) {
    auto s = std::string_view(arr[i].get_string());
    auto ok = !s.empty() && !(s[0] >= '0' && s[0] <= '9')
              && std::all_of(s.begin(), s.end(), [](char c) {
                   return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                          || (c >= '0' && c <= '9') || c == '_';
                 });
    if (!ok)
      return "element " + std::to_string(i) + " must be a variable name "
             "([A-Za-z_][A-Za-z0-9_]*), got " + value_text(arr[i]);
  }
  return {};
}

/// An address the HTTP server can listen on.
std::string check_endpoint(const json::value& v) {
  http::endpoint ep;
  auto problem = http::parse_endpoint(v.get_string(), ep);
  return problem.empty() ? std::string{} : problem + ", got " + value_text(v);
}

/// "off", or an address the HTTP server can listen on.
std::string check_listen(const json::value& v) {
  auto s = std::string_view(v.get_string());
  if (s == "off")
    return {};
  http::endpoint ep;
  auto problem = http::parse_endpoint(s, ep);
  if (problem.empty())
    return {};
  return problem + " (or \"off\"), got " + value_text(v);
}

/// Top-level keys, in registry (and canonical) order.
const std::vector<property<snapshot>>& root_properties() {
  static const std::vector<property<snapshot>> table{
    field<&snapshot::data_dir>("data_dir")
      .def(R"(".spool/data")")
      .check(check_not_empty, "not empty")
      .doc("Directory where stage programs write their files."),
    field<&snapshot::database_url>("database_url")
      .def(R"("")")
      .doc("libpq URL of the database; empty: the managed local cluster. "
           "SPOOL_DATABASE_URL wins."),
    group<snapshot>("worker", property_type::object)
      .live()
      .doc("Settings of each worker process."),
    field<&snapshot::worker, &worker_config::heartbeat_interval_s>(
      "worker.heartbeat_interval_s")
      .def("5")
      .between(0.01, 3600)
      .live()
      .doc("Seconds between lease extensions and heartbeat log lines."),
    field<&snapshot::worker, &worker_config::lease_s>("worker.lease_s")
      .def("30")
      .between(0.01, 86400)
      .rule("> worker.heartbeat_interval_s")
      .live()
      .doc("Seconds a claimed run stays leased without a heartbeat."),
    field<&snapshot::worker, &worker_config::claim_batch_limit>(
      "worker.claim_batch_limit")
      .def("100")
      .between(1, 10000)
      .live()
      .doc("Maximum stage runs claimed by one statement."),
    field<&snapshot::worker, &worker_config::record_batch_limit>(
      "worker.record_batch_limit")
      .def("500")
      .between(1, 10000)
      .live()
      .doc("Maximum outcomes recorded by one statement."),
    field<&snapshot::worker, &worker_config::shutdown_grace_s>(
      "worker.shutdown_grace_s")
      .def("30")
      .between(0, 86400)
      .live()
      .doc("Seconds running work may take to finish on shutdown before it is "
           "cancelled."),
    field<&snapshot::worker, &worker_config::rescue_interval_s>(
      "worker.rescue_interval_s")
      .def("15")
      .between(0.01, 86400)
      .live()
      .doc("Seconds between runs of the rescuer of expired leases."),
    field<&snapshot::worker, &worker_config::stuck_sweep_interval_s>(
      "worker.stuck_sweep_interval_s")
      .def("3600")
      .between(0.01, 86400)
      .live()
      .doc("Seconds between stuck-job sweeps."),
    field<&snapshot::worker, &worker_config::stuck_margin_s>(
      "worker.stuck_margin_s")
      .def("300")
      .between(0, 86400)
      .live()
      .doc("Seconds past its timeout before a running run counts as stuck."),
    field<&snapshot::worker, &worker_config::idle_poll_s>("worker.idle_poll_s")
      .def("1")
      .between(0.01, 3600)
      .live()
      .doc("Seconds between backstop polls when no NOTIFY arrives."),
    field<&snapshot::worker, &worker_config::progress_log_interval_s>(
      "worker.progress_log_interval_s")
      .def("30")
      .between(0.01, 86400)
      .live()
      .doc("Seconds between progress log lines."),
    field<&snapshot::worker, &worker_config::db_statement_timeout_s>(
      "worker.db_statement_timeout_s")
      .def("30")
      .between(0.1, 3600)
      .doc("Seconds one SQL statement may run (PostgreSQL "
           "statement_timeout); set on each connection when it opens."),
    field<&snapshot::worker, &worker_config::db_lock_timeout_s>(
      "worker.db_lock_timeout_s")
      .def("10")
      .between(0.1, 3600)
      .doc("Seconds one statement may wait for a lock (PostgreSQL "
           "lock_timeout); set on each connection when it opens."),
    field<&snapshot::worker, &worker_config::db_connect_timeout_s>(
      "worker.db_connect_timeout_s")
      .def("10")
      .between(2, 600)
      .doc("Whole seconds one connection attempt may take (libpq "
           "connect_timeout); used when a worker (re)connects."),
    field<&snapshot::worker, &worker_config::db_keepalives_idle_s>(
      "worker.db_keepalives_idle_s")
      .def("10")
      .between(1, 7200)
      .doc("Whole seconds of silence before the first TCP keepalive probe "
           "(libpq keepalives_idle); used when a worker (re)connects."),
    field<&snapshot::worker, &worker_config::db_keepalives_interval_s>(
      "worker.db_keepalives_interval_s")
      .def("5")
      .between(1, 600)
      .doc("Whole seconds between TCP keepalive probes (libpq "
           "keepalives_interval); used when a worker (re)connects."),
    field<&snapshot::worker, &worker_config::db_keepalives_count>(
      "worker.db_keepalives_count")
      .def("3")
      .between(1, 100)
      .doc("Unanswered keepalive probes before a connection counts as dead "
           "(libpq keepalives_count); used when a worker (re)connects."),
    field<&snapshot::worker, &worker_config::db_tcp_user_timeout_s>(
      "worker.db_tcp_user_timeout_s")
      .def("30")
      .between(1, 3600)
      .doc("Seconds sent data may stay unacknowledged before a connection "
           "counts as dead (libpq tcp_user_timeout); used when a worker "
           "(re)connects."),
    field<&snapshot::worker, &worker_config::db_call_timeout_s>(
      "worker.db_call_timeout_s")
      .def("60")
      .between(1, 7200)
      .rule("> worker.db_statement_timeout_s")
      .live()
      .doc("Seconds an actor waits for one database call before it gives up "
           "on the reply (client-side deadline)."),
    group<snapshot>("budgets", property_type::object)
      .live()
      .doc("Daily spending limits held across all workers."),
    field<&snapshot::budgets, &budget_config::soft_usd>("budgets.soft_usd")
      .def("100")
      .between(0, 10000000)
      .live()
      .doc("USD spent in a day past which a warning event fires, once a day; "
           "0: none."),
    field<&snapshot::budgets, &budget_config::hard_usd>("budgets.hard_usd")
      .def("150")
      .between(0, 10000000)
      .live()
      .doc("USD a day that new paid work may not pass: claims reserve their "
           "runs' estimates against it; 0: no limit."),
    field<&snapshot::budgets, &budget_config::reset_at>("budgets.reset_at")
      .def(R"("00:00")")
      .check(check_clock_time, "HH:MM")
      .live()
      .doc("Local time in time_zone when the budget day starts."),
    field<&snapshot::budgets, &budget_config::time_zone>("budgets.time_zone")
      .def(R"("UTC")")
      .check(check_time_zone, "[A-Za-z0-9_+/-], not empty")
      .live()
      .doc("IANA time zone of reset_at; PostgreSQL checks that it exists when "
           "a worker writes the budgets."),
    field<&snapshot::budgets, &budget_config::day_s>("budgets.day_s")
      .def("86400")
      .between(1, 86400)
      .live()
      .doc("Seconds a budget day lasts; 86400: a day from reset_at, shorter "
           "ones (for tests) start at multiples of the length since the "
           "epoch."),
    field<&snapshot::budgets, &budget_config::overrun_factor>(
      "budgets.overrun_factor")
      .def("1.2")
      .between(1, 100)
      .live()
      .doc("A task whose actual cost passes its estimate times this fires "
           "one cost_overrun event."),
    field<&snapshot::budgets, &budget_config::client_soft_usd>(
      "budgets.client_soft_usd")
      .def("{}")
      .between(0, 10000000)
      .check(check_client_ids, "client ids")
      .live()
      .doc("Soft budgets of single clients: client id -> USD a day."),
    field<&snapshot::budgets, &budget_config::client_hard_usd>(
      "budgets.client_hard_usd")
      .def("{}")
      .between(0, 10000000)
      .check(check_client_ids, "client ids")
      .live()
      .doc("Hard budgets of single clients: client id -> USD a day."),
    group<snapshot>("http", property_type::object)
      .doc("The operators' HTTP endpoint of each worker: /metrics, /healthz, "
           "/readyz."),
    field<&snapshot::http, &http_config::listen>("http.listen")
      .def(R"("127.0.0.1:9464")")
      .check(check_listen, "host:port or off")
      .doc("Address to serve /metrics, /healthz and /readyz on: \"host:port\" "
           "(\"[v6]:port\"; port 0: any free port), or \"off\". --http, then "
           "SPOOL_HTTP, win over it."),
    field<&snapshot::http, &http_config::cluster_metrics>("http.cluster_metrics")
      .def("false")
      .doc("Also serve the cluster-wide metrics read from the database (queue "
           "depth, task states, providers, budgets): exactly one scraped process "
           "of a cluster should. --cluster-metrics sets it."),
    group<snapshot>("api", property_type::object)
      .doc("The client API of `spool serve`."),
    field<&snapshot::api, &api_config::listen>("api.listen")
      .def(R"("127.0.0.1:8080")")
      .check(check_endpoint, "host:port")
      .doc("Address `spool serve` listens on; without any API token it "
           "answers on a loopback address only. --http wins over it."),
    field<&snapshot::api, &api_config::requests_per_s>("api.requests_per_s")
      .def("50")
      .between(0.1, 100000)
      .doc("Requests a second per token (per peer address without tokens); "
           "past the burst a request gets 429 with Retry-After."),
    field<&snapshot::api, &api_config::burst>("api.burst")
      .def("100")
      .between(1, 1000000)
      .doc("Requests a token may make at once above its rate."),
    field<&snapshot::api, &api_config::max_request_bytes>("api.max_request_bytes")
      .def("8388608")
      .between(1024, 1073741824)
      .doc("Largest request body in bytes; a larger one gets 413."),
    group<snapshot>("providers", property_type::object_list)
      .def("[]")
      .rule("names unique")
      .live()
      .doc("External services whose limits hold across all workers, in file "
           "order."),
    group<snapshot>("stages", property_type::object_list)
      .required()
      .rule("at least one")
      .new_tasks()
      .doc("The pipeline's stages, in file order."),
  };
  return table;
}

/// Appends the keys of the price term stored at stage member Term
/// ("price", "price.instead", "price.plus") under `prefix`, after the
/// optional object itself (present when Has is set). `when_rule`: "" when
/// `when` may be empty, else its rule for docs.
template <price_term stage_config::*Term, bool stage_config::*Has>
void add_price_properties(std::vector<property<stage_config>>& table,
                          const std::string& prefix, bool when_required,
                          std::string_view description, std::string_view when_doc) {
  using sc = stage_config;
  using pt = price_term;
  auto key = [&](std::string_view k) { return prefix + "." + std::string(k); };
  table.push_back(group<sc>(prefix, property_type::object)
                    .optional_object([](const sc& s) { return s.*Has; },
                                     [](sc& s) { s.*Has = true; })
                    .live()
                    .doc(description));
  auto when = field<Term, &pt::when>(key("when"));
  if (when_required)
    when.required().check(check_required_field_name, "[A-Za-z_][A-Za-z0-9_]{0,62}");
  else
    when.def(R"("")").check(check_field_name, "[A-Za-z_][A-Za-z0-9_]{0,62} or empty");
  table.insert(table.end(), {
    field<Term, &pt::model>(key("model"))
      .def(R"("")")
      .live()
      .doc("The provider's model the price is for (flux-pro), shown in "
           "estimates and reports."),
    field<Term, &pt::per_call>(key("per_call"))
      .def("0")
      .between(0, 10000)
      .live()
      .doc("USD per call."),
    field<Term, &pt::per_unit>(key("per_unit"))
      .def("0")
      .between(0, 10000)
      .live()
      .doc("USD per unit."),
    field<Term, &pt::units>(key("units"))
      .def("[]")
      .check(check_field_names, "payload field names")
      .live()
      .doc("Payload fields whose product is a call's units (duration_s, "
           "variations); a number counts as itself, an array as its length, "
           "true as 1; a field absent counts 1. None: one unit."),
    when.live().doc(when_doc),
  });
}

/// Appends the keys of the executor object stored at stage member Base
/// ("executor", "fallback.executor") under `prefix`: one list of executor
/// keys, declared once for every place a stage holds an executor.
template <executor_config stage_config::*Base>
void add_executor_properties(std::vector<property<stage_config>>& table,
                             const std::string& prefix,
                             std::string_view description) {
  using sc = stage_config;
  using ex = executor_config;
  using sim = simulate_config;
  using lat = latency_config;
  using err = error_rates;
  auto key = [&](std::string_view k) { return prefix + "." + std::string(k); };
  table.push_back(
    group<sc>(prefix, property_type::object).live().doc(description));
  table.insert(table.end(), {
    field<Base, &ex::kind>(key("kind"))
      .def(R"("simulate")")
      .live()
      .doc("simulate: seeded fake work; command: run a program."),
    group<sc>(key("latency"), property_type::object)
      .when(key("kind"), "simulate")
      .live()
      .doc("Simulated latency of one call."),
    field<Base, &ex::simulate, &sim::latency, &lat::dist>(key("latency.dist"))
      .def(R"("fixed")")
      .when(key("kind"), "simulate")
      .live()
      .doc("Shape of the latency distribution."),
    field<Base, &ex::simulate, &sim::latency, &lat::ms>(key("latency.ms"))
      .def("200")
      .between(0, 3600000)
      .when(key("latency.dist"), "fixed")
      .live()
      .doc("Latency in milliseconds."),
    field<Base, &ex::simulate, &sim::latency, &lat::min_ms>(
      key("latency.min_ms"))
      .def("100")
      .between(0, 3600000)
      .when(key("latency.dist"), "uniform")
      .live()
      .doc("Lowest latency in milliseconds."),
    field<Base, &ex::simulate, &sim::latency, &lat::max_ms>(
      key("latency.max_ms"))
      .def("300")
      .between(0, 3600000)
      .rule(">= min_ms")
      .when(key("latency.dist"), "uniform")
      .live()
      .doc("Highest latency in milliseconds."),
    field<Base, &ex::simulate, &sim::latency, &lat::p50_ms>(
      key("latency.p50_ms"))
      .def("200")
      .above(0)
      .at_most(3600000)
      .when(key("latency.dist"), "lognormal")
      .live()
      .doc("Median latency in milliseconds."),
    field<Base, &ex::simulate, &sim::latency, &lat::p99_ms>(
      key("latency.p99_ms"))
      .def("1000")
      .above(0)
      .at_most(3600000)
      .rule(">= p50_ms")
      .when(key("latency.dist"), "lognormal")
      .live()
      .doc("99th percentile latency in milliseconds."),
    group<sc>(key("errors"), property_type::object)
      .rule("sum <= 1")
      .when(key("kind"), "simulate")
      .live()
      .doc("Probability per call of each injected error class."),
    field<Base, &ex::simulate, &sim::errors, &err::transient>(
      key("errors.transient"))
      .def("0")
      .between(0, 1)
      .when(key("kind"), "simulate")
      .live()
      .doc("Probability of a transient error (backoff, counts)."),
    field<Base, &ex::simulate, &sim::errors, &err::network>(
      key("errors.network"))
      .def("0")
      .between(0, 1)
      .when(key("kind"), "simulate")
      .live()
      .doc("Probability of a network error (one immediate retry)."),
    field<Base, &ex::simulate, &sim::errors, &err::rate_limited>(
      key("errors.rate_limited"))
      .def("0")
      .between(0, 1)
      .when(key("kind"), "simulate")
      .live()
      .doc("Probability of a rate-limited error (snooze, no attempt)."),
    field<Base, &ex::simulate, &sim::errors, &err::permanent>(
      key("errors.permanent"))
      .def("0")
      .between(0, 1)
      .when(key("kind"), "simulate")
      .live()
      .doc("Probability of a permanent error (fails at once)."),
    field<Base, &ex::simulate, &sim::errors, &err::timeout>(
      key("errors.timeout"))
      .def("0")
      .between(0, 1)
      .when(key("kind"), "simulate")
      .live()
      .doc("Probability of a timeout (counts as an attempt)."),
    field<Base, &ex::simulate, &sim::errors, &err::crash>(key("errors.crash"))
      .def("0")
      .between(0, 1)
      .when(key("kind"), "simulate")
      .live()
      .doc("Probability that the stage actor crashes (chaos testing: the job "
           "is retried, the actor replaced)."),
    field<Base, &ex::simulate, &sim::retry_after_s>(key("retry_after_s"))
      .def("2")
      .between(0, 86400)
      .when(key("kind"), "simulate")
      .live()
      .doc("Retry-After in seconds reported with injected rate_limited "
           "errors."),
    field<Base, &ex::simulate, &sim::cost>(key("cost"))
      .def("0")
      .between(0, 10000)
      .rule("<= max_cost")
      .when(key("kind"), "simulate")
      .live()
      .doc("Cost of one call in USD."),
    field<Base, &ex::simulate, &sim::seed>(key("seed"))
      .def("1")
      .at_least(0)
      .when(key("kind"), "simulate")
      .live()
      .doc("Seed of the simulation's random generator (uint64)."),
    field<Base, &ex::command, &command_config::argv>(key("argv"))
      .required()
      .check(check_argv, "non-empty")
      .when(key("kind"), "command")
      .live()
      .doc("Program and arguments; a relative argv[0] is resolved by the "
           "runtime."),
    field<Base, &ex::command, &command_config::env>(key("env"))
      .def("{}")
      .when(key("kind"), "command")
      .live()
      .doc("Variables set for the program, with these values; they win "
           "over passed ones."),
    field<Base, &ex::command, &command_config::pass_env>(key("pass_env"))
      .def("[]")
      .check(check_env_names, "variable names")
      .when(key("kind"), "command")
      .live()
      .doc("Names of the worker's environment variables the program also "
           "gets (e.g. an API key); a missing one is absent."),
    field<Base, &ex::command, &command_config::kill_grace_s>(
      key("kill_grace_s"))
      .def("5")
      .between(0, 3600)
      .when(key("kind"), "command")
      .live()
      .doc("Seconds between TERM and KILL when the program must stop.")
  });
}

/// Keys inside one element of "stages", in registry (and canonical) order.
const std::vector<property<stage_config>>& stage_properties() {
  using sc = stage_config;
  static const std::vector<property<stage_config>> table = [] {
    std::vector<property<sc>> t{
      field<&sc::name>("name")
        .required()
        .check(check_name, "[a-z][a-z0-9_]{0,62}, unique")
        .new_tasks()
        .doc("Name of the stage."),
      field<&sc::after>("after")
        .def("[]")
        .rule("names of other stages, no cycle")
        .new_tasks()
        .doc("Stages whose output this stage waits for."),
      field<&sc::max_concurrent>("max_concurrent")
        .def("1")
        .between(1, 10000)
        .live()
        .doc("Runs of this stage one worker executes at once."),
      field<&sc::timeout_s>("timeout_s")
        .def("60")
        .between(0.001, 604800)
        .live()
        .doc("Seconds one run may take (per unit when timeout_per is set)."),
      field<&sc::timeout_per>("timeout_per")
        .def(R"("")")
        .live()
        .doc("Numeric payload field that multiplies timeout_s (at least 1x); "
             "empty: no scaling."),
      field<&sc::timeout_max_s>("timeout_max_s")
        .def("86400")
        .between(0.001, 604800)
        .rule(">= timeout_s")
        .live()
        .doc("Upper bound in seconds of a timeout scaled by timeout_per."),
      field<&sc::optional>("optional")
        .def("false")
        .new_tasks()
        .doc("When true, a failure of this stage leaves the task "
             "partially_completed instead of failed."),
      field<&sc::approval>("approval")
        .def("false")
        .rule("only with after")
        .new_tasks()
        .doc("When true, the stage's runs wait for the task's approval once "
             "their inputs are done (the task is awaiting_approval until "
             "`spool approve`)."),
      field<&sc::max_cost>("max_cost")
        .def("10000")
        .above(0)
        .at_most(1000000)
        .live()
        .doc("Most USD one execution may report as its cost; a result above "
             "it fails its run (permanent)."),
      field<&sc::max_output_bytes>("max_output_bytes")
        .def("1048576")
        .between(2, 67108864)
        .live()
        .doc("Largest output JSON one execution may report, in bytes; a larger "
             "result fails its run (permanent)."),
      group<sc>("retry", property_type::object)
        .live()
        .doc("Retry policy for failed runs."),
      field<&sc::retry, &retry_policy::max_retries>("retry.max_retries")
        .def("3")
        .between(0, 100)
        .new_tasks()
        .doc("Counted failures retried before the run fails."),
      field<&sc::retry, &retry_policy::base_s>("retry.base_s")
        .def("5")
        .between(0, 86400)
        .live()
        .doc("Seconds of backoff after the first counted failure."),
      field<&sc::retry, &retry_policy::factor>("retry.factor")
        .def("3")
        .between(1, 100)
        .live()
        .doc("Backoff growth per counted failure."),
      field<&sc::retry, &retry_policy::jitter>("retry.jitter")
        .def("0.2")
        .between(0, 1)
        .live()
        .doc("Random spread of each backoff as a fraction (0.2 = +-20 %)."),
      field<&sc::retry, &retry_policy::max_delay_s>("retry.max_delay_s")
        .def("3600")
        .between(0, 86400)
        .live()
        .doc("Upper bound of one backoff in seconds, jitter included."),
      field<&sc::retry, &retry_policy::max_snooze_s>("retry.max_snooze_s")
        .def("3600")
        .above(0)
        .at_most(86400)
        .live()
        .doc("Upper bound of one rate-limited snooze in seconds, whatever "
             "Retry-After the provider asks for."),
      field<&sc::retry, &retry_policy::max_snoozed_total_s>(
        "retry.max_snoozed_total_s")
        .def("86400")
        .above(0)
        .at_most(604800)
        .live()
        .doc("Total seconds one run may spend snoozed for rate limits; the "
             "snooze that would pass it fails the run (rate_limited)."),
      field<&sc::retry, &retry_policy::max_lost_leases>("retry.max_lost_leases")
        .def("5")
        .between(0, 100)
        .new_tasks()
        .doc("Leases a run may lose because its worker died or stalled before "
             "it fails; counted apart from max_retries, copied into runs at "
             "enqueue.")
    };
    add_executor_properties<&sc::executor>(t, "executor",
                                           "What does the work of a run.");
    t.insert(t.end(), {
      field<&sc::provider>("provider")
        .def(R"("")")
        .rule("name of a provider")
        .live()
        .doc("Provider whose limits this stage's calls count against; empty: "
             "none."),
      group<sc>("fallback", property_type::object)
        .optional_object(
          [](const sc& s) { return !s.fallback_provider.empty(); })
        .rule("needs provider")
        .live()
        .doc("Where calls go while provider's breaker is open or its quota "
             "is spent; absent: none."),
      field<&sc::fallback_provider>("fallback.provider")
        .required()
        .rule("name of a provider other than provider")
        .live()
        .doc("Provider that takes the calls instead."),
    });
    add_executor_properties<&sc::fallback_executor>(
      t, "fallback.executor",
      "Executor of calls sent to the fallback, with the keys and rules of "
      "executor; absent: a copy of executor.");
    add_price_properties<&sc::price, &sc::has_price>(
      t, "price", false,
      "What a call costs: per_call + per_unit x units, estimated from the "
      "payload at enqueue; absent: the stage is free and never waits for a "
      "budget.",
      "Payload field that must be set (true, non-zero, not empty) for the "
      "stage to cost anything; empty: always.");
    add_price_properties<&sc::price_instead, &sc::has_price_instead>(
      t, "price.instead", true,
      "A term that replaces price's own when its when field is set (an HD "
      "model); absent: none.",
      "Payload field that selects this term.");
    add_price_properties<&sc::price_plus, &sc::has_price_plus>(
      t, "price.plus", true,
      "A term added to the price when its when field is set (an upscale); "
      "absent: none.",
      "Payload field that adds this term.");
    return t;
  }();
  return table;
}

/// Keys inside one element of "providers", in registry (and canonical)
/// order. Every key is live: workers write the limits to the database when
/// they start and on every reload.
const std::vector<property<provider_config>>& provider_properties() {
  using pc = provider_config;
  using rl = rate_limit;
  using dq = daily_quota;
  using br = breaker_config;
  static const std::vector<property<provider_config>> table{
    field<&pc::name>("name")
      .required()
      .check(check_name, "[a-z][a-z0-9_]{0,62}, unique")
      .live()
      .doc("Name of the provider, as stages name it."),
    field<&pc::max_concurrent>("max_concurrent")
      .def("0")
      .between(0, 100000)
      .live()
      .doc("Calls in flight at once across all workers (exact); 0: no cap."),
    group<pc>("rate", property_type::object)
      .optional_object([](const pc& p) { return p.has_rate; },
                       [](pc& p) { p.has_rate = true; })
      .live()
      .doc("Token bucket shared by all workers; absent: no rate limit."),
    field<&pc::rate, &rl::per_s>("rate.per_s")
      .required()
      .above(0)
      .at_most(100000)
      .live()
      .doc("Calls a second on average: the rate the bucket refills at."),
    field<&pc::rate, &rl::burst>("rate.burst")
      .def("1")
      .between(1, 100000)
      .live()
      .doc("Tokens the bucket holds: calls that may start at once after a "
           "quiet spell."),
    group<pc>("daily_quota", property_type::object)
      .optional_object([](const pc& p) { return p.has_quota; },
                       [](pc& p) { p.has_quota = true; })
      .live()
      .doc("Units the provider may use per window; absent: no quota."),
    field<&pc::quota, &dq::units>("daily_quota.units")
      .required()
      .above(0)
      .at_most(1e12)
      .live()
      .doc("Units per window."),
    field<&pc::quota, &dq::reset_at>("daily_quota.reset_at")
      .def(R"("00:00")")
      .check(check_clock_time, "HH:MM")
      .live()
      .doc("Local time in time_zone when a day-long window (window_s 86400) "
           "starts."),
    field<&pc::quota, &dq::time_zone>("daily_quota.time_zone")
      .def(R"("UTC")")
      .check(check_time_zone, "[A-Za-z0-9_+/-], not empty")
      .live()
      .doc("IANA time zone of reset_at (America/Los_Angeles); PostgreSQL "
           "checks that it exists when a worker writes the limits."),
    field<&pc::quota, &dq::window_s>("daily_quota.window_s")
      .def("86400")
      .between(1, 2678400)
      .live()
      .doc("Seconds a window lasts; 86400: a day from reset_at, other "
           "lengths start at multiples of the length since the epoch."),
    field<&pc::quota, &dq::units_per_call>("daily_quota.units_per_call")
      .def("1")
      .above(0)
      .at_most(1e6)
      .live()
      .doc("Units one call uses when units_field is empty or missing from "
           "the payload."),
    field<&pc::quota, &dq::units_field>("daily_quota.units_field")
      .def(R"("")")
      .check(check_field_name, "[A-Za-z_][A-Za-z0-9_]{0,62} or empty")
      .live()
      .doc("Numeric payload field giving the units of one call (images); "
           "empty: units_per_call."),
    group<pc>("breaker", property_type::object)
      .optional_object([](const pc& p) { return p.has_breaker; },
                       [](pc& p) { p.has_breaker = true; })
      .live()
      .doc("Circuit breaker: stops calls after failures, probes after a "
           "cooldown; absent: none."),
    field<&pc::breaker, &br::consecutive_failures>(
      "breaker.consecutive_failures")
      .def("5")
      .between(1, 1000)
      .live()
      .doc("Failed calls in a row that open the breaker."),
    field<&pc::breaker, &br::failure_rate>("breaker.failure_rate")
      .def("0")
      .between(0, 1)
      .live()
      .doc("Failed share of the last window calls that opens the breaker; "
           "0: no rate rule."),
    field<&pc::breaker, &br::window>("breaker.window")
      .def("20")
      .between(1, 1000)
      .live()
      .doc("Calls the failure rate is computed over."),
    field<&pc::breaker, &br::cooldown_s>("breaker.cooldown_s")
      .def("30")
      .between(0.01, 86400)
      .live()
      .doc("Seconds the breaker stays open before it lets probes through."),
    field<&pc::breaker, &br::probes>("breaker.probes")
      .def("1")
      .between(1, 100)
      .live()
      .doc("Calls let through after the cooldown (half-open) to test the "
           "provider."),
  };
  return table;
}

template <class S>
const std::vector<property<S>>& properties_of() {
  if constexpr (std::is_same_v<S, snapshot>)
    return root_properties();
  else if constexpr (std::is_same_v<S, provider_config>)
    return provider_properties();
  else
    return stage_properties();
}

template <class S>
const property<S>* find_property(std::string_view key) {
  for (const auto& p : properties_of<S>())
    if (p.key == key)
      return &p;
  return nullptr;
}

/// Whether the property's own condition holds for `s`.
template <class S>
bool condition_holds(const S& s, const property<S>& p) {
  if (p.when_.key.empty())
    return true;
  const auto* other = find_property<S>(p.when_.key);
  if (other == nullptr || !other->is_leaf())
    return false;
  auto v = other->get(s);
  return v.is_string() && v.get_string() == p.when_.value;
}

/// Whether the property applies to `s`: it and the groups that contain it
/// are present (when optional) and their conditions hold. While parsing,
/// `given` holds the keys the file gives: an optional object counts as
/// present when the file gives it, whatever it contains.
template <class S>
bool applies(const S& s, const property<S>& p,
             const std::set<std::string>* given = nullptr) {
  if (p.present != nullptr
      && !(given != nullptr ? given->count(p.key) != 0 : p.present(s)))
    return false;
  if (!condition_holds(s, p))
    return false;
  auto key = std::string_view(p.key);
  auto dot = key.rfind('.');
  if (dot == std::string_view::npos)
    return true;
  const auto* parent = find_property<S>(key.substr(0, dot));
  return parent == nullptr || applies(s, *parent, given);
}

template <class S>
void apply_defaults(S& s) {
  for (const auto& p : properties_of<S>())
    if (p.is_leaf() && !p.default_value.is_null())
      p.set(s, p.default_value);
}

// -- the parser ---------------------------------------------------------------

std::string join_path(std::string_view prefix, std::string_view key) {
  if (prefix.empty())
    return std::string(key);
  std::string out(prefix);
  out += '.';
  out += key;
  return out;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    auto diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      auto up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                         diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

/// Collects problems while it fills one snapshot.
class validator {
public:
  std::vector<problem> problems;

  void add(std::string path, std::string message) {
    problems.push_back(problem{std::move(path), std::move(message)});
  }

  /// Parses the keys of `obj` into `out`. `group_key` is the dotted key of
  /// `obj` inside the scope ("" for the scope itself, "retry", ...), and
  /// `scope_path` the path of the scope in the document ("" or
  /// "stages[2]"). Records every key seen in `present`.
  template <class S>
  void parse_group(const json::object& obj, std::string_view group_key,
                   std::string_view scope_path, S& out,
                   std::set<std::string>& present) {
    for (const auto& kv : obj) {
      auto key = join_path(group_key, kv.key());
      auto path = join_path(scope_path, key);
      // A dot inside a key ("retry.factor") must not reach a nested key.
      const auto* p = kv.key().find('.') == json::string_view::npos
                        ? find_property<S>(key)
                        : nullptr;
      if (p == nullptr) {
        add(path, unknown_key_message<S>(group_key, kv.key()));
        continue;
      }
      const auto& v = kv.value();
      // An optional object that is not an object is not there: its required
      // keys are not missing.
      if (p->present == nullptr || v.is_object())
        present.insert(key);
      switch (p->type) {
        case property_type::object:
          if (!v.is_object()) {
            add(path, "must be an object, got " + value_text(v));
          } else {
            if (p->mark_present != nullptr)
              p->mark_present(out);
            parse_group(v.get_object(), key, scope_path, out, present);
          }
          break;
        case property_type::object_list:
          if constexpr (std::is_same_v<S, snapshot>) {
            if (p->key == "providers")
              parse_list(v, path, "provider", out.providers);
            else
              parse_list(v, path, "stage", out.stages);
          }
          break;
        default:
          if (check_value(*p, v, path))
            p->set(out, v);
      }
    }
  }

  /// Parses a whole scope: defaults, keys, then presence and conditions.
  /// Returns the keys the file gives.
  template <class S>
  std::set<std::string> parse_scope(const json::object& obj,
                                    std::string_view scope_path, S& out) {
    apply_defaults(out);
    std::set<std::string> present;
    parse_group(obj, "", scope_path, out, present);
    for (const auto& p : properties_of<S>()) {
      auto path = join_path(scope_path, p.key);
      if (present.count(p.key) != 0) {
        if (!condition_holds(out, p))
          add(path, "only valid when " + p.when_.key + " is '"
                      + std::string(p.when_.value) + "'");
      } else if (p.required_ && applies(out, p, &present)) {
        add(path, "missing required key");
      }
    }
    return present;
  }

  /// Parses "stages" or "providers" into `out`; `noun` names one element.
  template <class E>
  void parse_list(const json::value& v, const std::string& path,
                  std::string_view noun, std::vector<E>& out) {
    if (!v.is_array()) {
      add(path, "must be an array of " + std::string(noun) + "s, got "
                  + value_text(v));
      return;
    }
    const auto& arr = v.get_array();
    if (arr.empty() && std::is_same_v<E, stage_config>)
      add(path, "must list at least one stage");
    for (std::size_t i = 0; i < arr.size(); ++i) {
      auto item_path = path + "[" + std::to_string(i) + "]";
      // An element that is not an object stays in as a nameless
      // placeholder, so that indices in later messages match the file.
      auto& item = out.emplace_back();
      if (!arr[i].is_object()) {
        add(item_path, "must be an object, got " + value_text(arr[i]));
        continue;
      }
      auto given = parse_scope(arr[i].get_object(), item_path, item);
      if constexpr (std::is_same_v<E, stage_config>) {
        // A fallback without an executor runs the stage's own.
        if (given.count("fallback") != 0
            && given.count("fallback.executor") == 0)
          item.fallback_executor = item.executor;
        check_stage(item, item_path);
      }
    }
  }

  /// Rules that relate several keys of one stage.
  void check_stage(const stage_config& s, const std::string& path) {
    if (s.approval && s.after.empty())
      add(path + ".approval",
          "needs after: an approval reviews what the stages before it made, and "
          "this stage waits for none");
    if (s.timeout_max_s < s.timeout_s)
      add(path + ".timeout_max_s",
          "must be >= timeout_s (" + format_number(s.timeout_s) + "), got "
            + format_number(s.timeout_max_s));
    check_executor(s.executor, s.max_cost, path + ".executor");
    // A copy of executor has executor's problems, reported there.
    if (!s.fallback_provider.empty() && s.fallback_executor != s.executor)
      check_executor(s.fallback_executor, s.max_cost,
                     path + ".fallback.executor");
  }

  /// Rules that relate several keys of one executor at `path`.
  void check_executor(const executor_config& e, double max_cost,
                      const std::string& path) {
    if (e.kind != executor_kind::simulate)
      return;
    const auto& sim = e.simulate;
    if (sim.cost > max_cost)
      add(path + ".cost", "must be <= max_cost (" + format_number(max_cost)
                            + "), got " + format_number(sim.cost));
    if (sim.errors.total() > 1 + 1e-9)
      add(path + ".errors", "probabilities must sum to <= 1, got "
                              + format_number(sim.errors.total()));
    const auto& lat = sim.latency;
    if (lat.dist == latency_dist::uniform && lat.max_ms < lat.min_ms)
      add(path + ".latency.max_ms",
          "must be >= min_ms (" + format_number(lat.min_ms) + "), got "
            + format_number(lat.max_ms));
    if (lat.dist == latency_dist::lognormal && lat.p99_ms < lat.p50_ms)
      add(path + ".latency.p99_ms",
          "must be >= p50_ms (" + format_number(lat.p50_ms) + "), got "
            + format_number(lat.p99_ms));
  }

  /// Rules that relate keys across the file: lease vs. heartbeat, stage
  /// and provider names, dependencies, the providers stages name.
  void check_snapshot(const snapshot& s) {
    if (s.worker.lease_s <= s.worker.heartbeat_interval_s)
      add("worker.lease_s", "must be > worker.heartbeat_interval_s ("
                              + format_number(s.worker.heartbeat_interval_s)
                              + "), got " + format_number(s.worker.lease_s));
    if (s.worker.db_call_timeout_s <= s.worker.db_statement_timeout_s)
      add("worker.db_call_timeout_s",
          "must be > worker.db_statement_timeout_s ("
            + format_number(s.worker.db_statement_timeout_s) + "), got "
            + format_number(s.worker.db_call_timeout_s));
    std::map<std::string_view, std::size_t> first_index;
    for (std::size_t i = 0; i < s.stages.size(); ++i) {
      const auto& name = s.stages[i].name;
      if (name.empty())
        continue;
      auto [it, added] = first_index.emplace(name, i);
      if (!added)
        add(stage_path(i) + ".name",
            "duplicate stage name '" + name + "' (first at "
              + stage_path(it->second) + ")");
    }
    std::vector<dag::node> nodes;
    for (std::size_t i = 0; i < s.stages.size(); ++i) {
      const auto& st = s.stages[i];
      for (std::size_t j = 0; j < st.after.size(); ++j) {
        const auto& dep = st.after[j];
        auto dep_path = stage_path(i) + ".after[" + std::to_string(j) + "]";
        if (first_index.count(dep) == 0)
          add(dep_path, "unknown stage '" + dep + "'");
        else if (std::find(st.after.begin(), st.after.begin() + j, dep)
                 != st.after.begin() + j)
          add(dep_path, "duplicate dependency '" + dep + "'");
      }
      if (!st.name.empty())
        nodes.push_back(dag::node{st.name, st.after});
    }
    if (auto cycle = dag(std::move(nodes)).find_cycle()) {
      std::string text;
      for (const auto& name : *cycle)
        text += (text.empty() ? "" : " -> ") + name;
      add(stage_path(first_index.at(cycle->front())) + ".after",
          "dependency cycle: " + text);
    }
    check_providers(s);
  }

  /// Provider names are unique; a stage's provider and fallback name
  /// providers, and a fallback stands in for a provider the stage has.
  void check_providers(const snapshot& s) {
    std::map<std::string_view, std::size_t> first_index;
    std::vector<std::string_view> names; // in file order, for suggestions
    for (std::size_t i = 0; i < s.providers.size(); ++i) {
      const auto& name = s.providers[i].name;
      if (name.empty())
        continue;
      auto [it, added] = first_index.emplace(name, i);
      if (added)
        names.push_back(name);
      else
        add(provider_path(i) + ".name",
            "duplicate provider name '" + name + "' (first at "
              + provider_path(it->second) + ")");
    }
    auto check_known = [&](const std::string& name, const std::string& path) {
      if (first_index.count(name) != 0)
        return;
      std::string msg = "unknown provider '" + name + "'";
      if (names.empty())
        msg += " (providers lists none)";
      else if (auto best = closest(name, names); !best.empty())
        msg += " (did you mean '" + best + "'?)";
      add(path, std::move(msg));
    };
    for (std::size_t i = 0; i < s.stages.size(); ++i) {
      const auto& st = s.stages[i];
      auto path = stage_path(i);
      if (!st.provider.empty())
        check_known(st.provider, path + ".provider");
      if (st.fallback_provider.empty())
        continue;
      check_known(st.fallback_provider, path + ".fallback.provider");
      if (st.provider.empty())
        add(path + ".fallback",
            "needs provider: a fallback stands in for the stage's provider, "
            "and the stage names none");
      else if (st.fallback_provider == st.provider)
        add(path + ".fallback.provider",
            "must differ from provider ('" + st.provider + "')");
    }
  }

private:
  static std::string stage_path(std::size_t i) {
    return "stages[" + std::to_string(i) + "]";
  }

  static std::string provider_path(std::size_t i) {
    return "providers[" + std::to_string(i) + "]";
  }

  /// The candidate a few typos away from `word` (the nearest, the first
  /// among equals), or empty.
  static std::string closest(std::string_view word,
                             const std::vector<std::string_view>& candidates) {
    std::string best;
    // Allow about one typo per three characters, at least two.
    std::size_t best_distance = 1 + std::max<std::size_t>(2, word.size() / 3);
    for (auto c : candidates) {
      auto d = edit_distance(word, c);
      if (d < best_distance) {
        best_distance = d;
        best = std::string(c);
      }
    }
    return best;
  }

  /// "unknown key", with a suggestion when a sibling key is a few typos
  /// away.
  template <class S>
  static std::string unknown_key_message(std::string_view group_key,
                                         std::string_view key) {
    std::vector<std::string_view> siblings;
    for (const auto& p : properties_of<S>()) {
      auto k = std::string_view(p.key);
      auto dot = k.rfind('.');
      auto parent = dot == std::string_view::npos ? std::string_view{}
                                                  : k.substr(0, dot);
      if (parent == group_key)
        siblings.push_back(dot == std::string_view::npos ? k
                                                         : k.substr(dot + 1));
    }
    auto best = closest(key, siblings);
    if (best.empty())
      return "unknown key";
    return "unknown key (did you mean '" + best + "'?)";
  }

  /// Type, bounds, choices and the extra rule; reports and returns false
  /// on the first violation.
  template <class S>
  bool check_value(const property<S>& p, const json::value& v,
                   const std::string& path) {
    switch (p.type) {
      case property_type::integer:
        if (!is_integral(v)) {
          add(path, "must be an integer, got " + value_text(v));
          return false;
        }
        if (!check_bounds(p, *as_number(v), v, path))
          return false;
        break;
      case property_type::number:
        if (!as_number(v)) {
          add(path, "must be a number, got " + value_text(v));
          return false;
        }
        if (!std::isfinite(*as_number(v))) {
          add(path, "must be a finite number, got " + value_text(v));
          return false;
        }
        if (!check_bounds(p, *as_number(v), v, path))
          return false;
        break;
      case property_type::boolean:
        if (!v.is_bool()) {
          add(path, "must be true or false, got " + value_text(v));
          return false;
        }
        break;
      case property_type::string:
        if (!v.is_string()) {
          add(path, "must be a string, got " + value_text(v));
          return false;
        }
        if (!p.choices.empty()
            && std::find(p.choices.begin(), p.choices.end(),
                         std::string_view(v.get_string()))
                 == p.choices.end()) {
          std::string list;
          for (auto c : p.choices)
            list += (list.empty() ? "'" : ", '") + std::string(c) + "'";
          add(path, "must be one of " + list + ", got " + value_text(v));
          return false;
        }
        break;
      case property_type::string_list: {
        if (!v.is_array()) {
          add(path, "must be an array of strings, got " + value_text(v));
          return false;
        }
        bool ok = true;
        const auto& arr = v.get_array();
        for (std::size_t i = 0; i < arr.size(); ++i)
          if (!arr[i].is_string()) {
            add(path + "[" + std::to_string(i) + "]",
                "must be a string, got " + value_text(arr[i]));
            ok = false;
          }
        if (!ok)
          return false;
        break;
      }
      case property_type::string_map: {
        if (!v.is_object()) {
          add(path, "must be an object of strings, got " + value_text(v));
          return false;
        }
        bool ok = true;
        for (const auto& kv : v.get_object())
          if (!kv.value().is_string()) {
            add(join_path(path, kv.key()),
                "must be a string, got " + value_text(kv.value()));
            ok = false;
          }
        if (!ok)
          return false;
        break;
      }
      case property_type::number_map: {
        if (!v.is_object()) {
          add(path, "must be an object of numbers, got " + value_text(v));
          return false;
        }
        bool ok = true;
        for (const auto& kv : v.get_object()) {
          auto x = as_number(kv.value());
          if (!x) {
            add(join_path(path, kv.key()),
                "must be a number, got " + value_text(kv.value()));
            ok = false;
          } else if (!check_bounds(p, *x, kv.value(), join_path(path, kv.key()))) {
            ok = false;
          }
        }
        if (!ok)
          return false;
        break;
      }
      case property_type::object:
      case property_type::object_list:
        break;
    }
    if (p.check_ != nullptr) {
      if (auto msg = p.check_(v); !msg.empty()) {
        add(path, std::move(msg));
        return false;
      }
    }
    return true;
  }

  template <class S>
  bool check_bounds(const property<S>& p, double x, const json::value& v,
                    const std::string& path) {
    if (p.min_open ? !(x > p.min) : !(x >= p.min)) {
      add(path, std::string("must be ") + (p.min_open ? "> " : ">= ")
                  + format_number(p.min) + ", got " + value_text(v));
      return false;
    }
    if (!(x <= p.max)) {
      add(path, "must be <= " + format_number(p.max) + ", got "
                  + value_text(v));
      return false;
    }
    return true;
  }
};


json::parse_options lenient_options() {
  json::parse_options opts;
  opts.allow_comments = true;
  opts.allow_trailing_commas = true;
  return opts;
}

/// Parses JSON text; on a syntax error, adds a problem with line and column.
std::optional<json::value> parse_json(std::string_view text,
                                      std::vector<problem>& problems) {
  json::stream_parser parser(json::storage_ptr(), lenient_options());
  json::error_code ec;
  auto consumed = parser.write(text.data(), text.size(), ec);
  if (!ec)
    parser.finish(ec);
  if (ec) {
    auto at = std::min(consumed, text.size());
    std::size_t line = 1;
    std::size_t column = 1;
    for (std::size_t i = 0; i < at; ++i) {
      if (text[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    auto msg = "JSON syntax error at line " + std::to_string(line)
               + ", column " + std::to_string(column);
    if (auto what = ec.message(); what != "syntax error")
      msg += ": " + what;
    problems.push_back(problem{"", std::move(msg)});
    return std::nullopt;
  }
  // Keys repeated within one object (json::parse silently keeps the last
  // one), and U+0000 anywhere.
  for (auto& f : strict_json_findings(text, lenient_options()))
    problems.push_back(problem{std::move(f.path), std::move(f.message)});
  return parser.release();
}

std::uint64_t fnv1a_64(std::string_view text) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// -- serialization ------------------------------------------------------------

/// Sets `value` at a dotted key, creating intermediate objects.
void put(json::object& root, std::string_view key, json::value value) {
  auto* obj = &root;
  for (auto dot = key.find('.'); dot != std::string_view::npos;
       dot = key.find('.')) {
    auto& next = (*obj)[key.substr(0, dot)];
    if (!next.is_object())
      next = json::object();
    obj = &next.get_object();
    key = key.substr(dot + 1);
  }
  (*obj)[key] = std::move(value);
}

template <class S>
json::object to_object(const S& s) {
  json::object out;
  for (const auto& p : properties_of<S>()) {
    if (!applies(s, p))
      continue;
    switch (p.type) {
      case property_type::object:
        put(out, p.key, json::object());
        break;
      case property_type::object_list:
        if constexpr (std::is_same_v<S, snapshot>) {
          json::array items;
          if (p.key == "providers")
            for (const auto& pr : s.providers)
              items.emplace_back(to_object(pr));
          else
            for (const auto& st : s.stages)
              items.emplace_back(to_object(st));
          put(out, p.key, std::move(items));
        }
        break;
      default:
        put(out, p.key, p.get(s));
    }
  }
  return out;
}

template <class S>
std::string qualified_name(std::string_view key) {
  if constexpr (std::is_same_v<S, snapshot>)
    return std::string(key);
  else if constexpr (std::is_same_v<S, provider_config>)
    return "providers[]." + std::string(key);
  else
    return "stages[]." + std::string(key);
}

template <class S>
void describe_into(std::vector<property_info>& out) {
  for (const auto& p : properties_of<S>()) {
    property_info info;
    info.name = qualified_name<S>(p.key);
    info.type = p.type;
    info.default_text = std::string(p.default_text);
    info.constraint = p.constraint();
    if (!p.when_.key.empty())
      info.applies_when = p.when_.key + " = " + std::string(p.when_.value);
    info.required = p.required_;
    info.effect = p.effect;
    info.needs_restart = p.effect == change_effect::restart;
    info.description = std::string(p.description);
    out.push_back(std::move(info));
  }
}

} // namespace

// -- snapshot -----------------------------------------------------------------

const stage_config* snapshot::stage(std::string_view name) const noexcept {
  for (const auto& s : stages)
    if (s.name == name)
      return &s;
  return nullptr;
}

const provider_config*
snapshot::provider(std::string_view name) const noexcept {
  for (const auto& p : providers)
    if (p.name == name)
      return &p;
  return nullptr;
}

dag snapshot::graph() const {
  std::vector<dag::node> nodes;
  nodes.reserve(stages.size());
  for (const auto& s : stages)
    nodes.push_back(dag::node{s.name, s.after});
  return dag(std::move(nodes));
}

std::vector<std::string> snapshot::topo_order() const {
  return graph().topo_order();
}

std::vector<std::string> snapshot::dependents(std::string_view name) const {
  return graph().downstream(name);
}

std::vector<std::string> snapshot::dependencies(std::string_view name) const {
  return graph().upstream(name);
}

std::vector<std::string> snapshot::roots() const {
  return graph().roots();
}

std::string effective_database_url(const snapshot& s, const char* env) {
  if (env != nullptr && *env != '\0')
    return env;
  return s.database_url;
}

// -- parsing and validation ---------------------------------------------------

std::string to_string(const problem& p) {
  if (p.path.empty())
    return p.message;
  return p.path + ": " + p.message;
}

std::string to_string(const std::vector<problem>& problems) {
  std::string out;
  for (const auto& p : problems)
    out += (out.empty() ? "" : "; ") + to_string(p);
  return out;
}

load_result parse(std::string_view json_text) {
  load_result result;
  auto doc = parse_json(json_text, result.problems);
  if (!doc)
    return result;
  if (!doc->is_object()) {
    result.problems.push_back(
      problem{"", "must be a JSON object, got " + value_text(*doc)});
    return result;
  }
  validator v;
  v.problems = std::move(result.problems);
  auto snap = std::make_shared<snapshot>();
  v.parse_scope(doc->get_object(), "", *snap);
  v.check_snapshot(*snap);
  if (!v.problems.empty()) {
    result.problems = std::move(v.problems);
    return result;
  }
  snap->version = compute_version(*snap);
  result.config = std::move(snap);
  return result;
}

load_result load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    load_result result;
    result.problems.push_back(
      problem{"", "cannot read config file '" + path
                    + "': " + std::generic_category().message(errno)});
    return result;
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    load_result result;
    result.problems.push_back(
      problem{"", "cannot read config file '" + path + "'"});
    return result;
  }
  return parse(text.str());
}

load_result validate(const snapshot& s) {
  return parse(canonical_json(s));
}

std::string canonical_json(const snapshot& s) {
  std::string out;
  write_json(out, to_object(s));
  return out;
}

std::string providers_json(const snapshot& s) {
  auto doc = json::parse(canonical_json(s));
  if (auto* p = doc.as_object().if_contains("providers"))
    return json::serialize(*p);
  return "[]";
}

std::string budgets_json(const snapshot& s) {
  auto doc = json::parse(canonical_json(s));
  return json::serialize(doc.as_object().at("budgets"));
}

std::string compute_version(const snapshot& s) {
  static constexpr char digits[] = "0123456789abcdef";
  auto h = fnv1a_64(canonical_json(s));
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4)
    out[static_cast<std::size_t>(i)] = digits[h & 0xf];
  return out;
}

// -- changes between snapshots ------------------------------------------------

std::string_view to_string(change_effect e) noexcept {
  switch (e) {
    case change_effect::live:
      return "live";
    case change_effect::restart:
      return "restart";
    case change_effect::new_tasks:
      return "new tasks";
  }
  return "unknown";
}

namespace {

/// The text of a side where there is nothing: a stage, provider or
/// optional object added or removed, or a key of an executor variant (or
/// latency shape) not selected.
constexpr std::string_view absent_text = "(none)";

/// How a whole stage added or removed takes effect: spool_enqueue creates
/// one run per configured stage in each task, so tasks already queued keep
/// runs of a removed stage and get none of an added one.
constexpr change_effect stage_set_effect = change_effect::new_tasks;

/// How a whole provider added or removed takes effect: workers write the
/// limits to the database on every reload.
constexpr change_effect provider_set_effect = change_effect::live;

std::string compact(const json::value& v) {
  std::string out;
  write_json(out, v);
  return out;
}

/// The value at a dotted key of an object made by to_object.
const json::value& value_at(const json::object& obj, std::string_view key) {
  auto dot = key.find('.');
  if (dot == std::string_view::npos)
    return obj.at(key);
  return value_at(obj.at(key.substr(0, dot)).as_object(),
                  key.substr(dot + 1));
}

/// Appends the leaf properties of scope S that differ between `old` and
/// `next`, in registry order, each keyed `prefix` + its dotted key. A key
/// is compared where it applies to either side (so keys of an unselected
/// executor kind make no noise) and shows "(none)" on a side where it does
/// not apply. An optional object (a provider's "rate", a stage's
/// "fallback") present on one side only is one change keyed by the object,
/// with its canonical JSON, and stands for the keys inside it.
template <class S>
void diff_scope(const S& old, const S& next, const std::string& prefix,
                std::vector<change>& out) {
  std::vector<std::string> toggled; // optional objects added or removed
  for (const auto& p : properties_of<S>()) {
    auto inside_toggled = std::any_of(
      toggled.begin(), toggled.end(), [&](const std::string& t) {
        return p.key.size() > t.size() && p.key.starts_with(t)
               && p.key[t.size()] == '.';
      });
    if (inside_toggled)
      continue;
    if (p.present != nullptr) {
      auto in_old = applies(old, p);
      auto in_next = applies(next, p);
      if (in_old == in_next)
        continue;
      toggled.push_back(p.key);
      auto side = [&](const S& s, bool in) {
        return in ? compact(value_at(to_object(s), p.key))
                  : std::string(absent_text);
      };
      out.push_back(change{prefix + p.key, side(old, in_old),
                           side(next, in_next), p.effect});
      continue;
    }
    if (!p.is_leaf())
      continue;
    if constexpr (!std::is_same_v<S, snapshot>)
      if (p.key == "name") // stages and providers are matched by name
        continue;
    auto in_old = applies(old, p);
    auto in_next = applies(next, p);
    if (!in_old && !in_next)
      continue;
    auto before = p.get(old);
    auto after = p.get(next);
    // Also when the key applies to one side only: the other side then holds
    // the default it was left at (kind simulate -> command keeps latency.ms
    // 200), which is no change worth a line.
    if (before == after)
      continue;
    out.push_back(change{prefix + p.key,
                         in_old ? compact(before) : std::string(absent_text),
                         in_next ? compact(after) : std::string(absent_text),
                         p.effect});
  }
}

/// The element of `list` named `name`, or nullptr.
template <class E>
const E* find_named(const std::vector<E>& list, std::string_view name) {
  for (const auto& e : list)
    if (e.name == name)
      return &e;
  return nullptr;
}

/// Appends the changes between two lists of named elements (stages or
/// providers), matched by name and keyed `<list>[<name>]`: those of each
/// element of `next` in its order, an added one as a whole where it
/// stands, then the removed ones in `old`'s order, each with `set_effect`.
template <class E>
void diff_list(const std::vector<E>& old, const std::vector<E>& next,
               std::string_view list, change_effect set_effect,
               std::vector<change>& out) {
  auto key = [&](const std::string& name) {
    return std::string(list) + "[" + name + "]";
  };
  for (const auto& e : next) {
    if (const auto* before = find_named(old, e.name))
      diff_scope(*before, e, key(e.name) + ".", out);
    else
      out.push_back(change{key(e.name), std::string(absent_text),
                           compact(to_object(e)), set_effect});
  }
  for (const auto& e : old)
    if (find_named(next, e.name) == nullptr)
      out.push_back(change{key(e.name), compact(to_object(e)),
                           std::string(absent_text), set_effect});
}

/// Sets every restart-only key of each element of `next` that `old` also
/// has back to its value there.
template <class E>
void keep_restart_only_in(const std::vector<E>& old, std::vector<E>& next) {
  for (auto& e : next) {
    const auto* before = find_named(old, e.name);
    if (before == nullptr)
      continue; // a new element has nothing to keep
    for (const auto& p : properties_of<E>())
      if (p.is_leaf() && p.effect == change_effect::restart)
        p.set(e, p.get(*before));
  }
}

} // namespace

std::vector<change> diff(const snapshot& old, const snapshot& next) {
  std::vector<change> out;
  diff_scope(old, next, "", out);
  diff_list(old.providers, next.providers, "providers", provider_set_effect,
            out);
  diff_list(old.stages, next.stages, "stages", stage_set_effect, out);
  return out;
}

std::vector<std::string> restart_required(const snapshot& old,
                                          const snapshot& next) {
  std::vector<std::string> out;
  for (auto& c : diff(old, next))
    if (c.effect == change_effect::restart)
      out.push_back(std::move(c.key));
  return out;
}

snapshot keep_restart_only(const snapshot& old, const snapshot& next) {
  auto out = next;
  for (const auto& p : root_properties())
    if (p.is_leaf() && p.effect == change_effect::restart)
      p.set(out, p.get(old));
  keep_restart_only_in(old.providers, out.providers);
  keep_restart_only_in(old.stages, out.stages);
  return out;
}

// -- registry -----------------------------------------------------------------

std::vector<property_info> describe() {
  std::vector<property_info> out;
  describe_into<snapshot>(out);
  describe_into<provider_config>(out);
  describe_into<stage_config>(out);
  return out;
}

} // namespace spool::config
