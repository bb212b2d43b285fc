#pragma once
// Process-wide logging: spdlog to stderr, human-readable text or one JSON
// object a line.
//
// Events: the things an operator searches for (a run claimed, completed or
// scheduled for a retry, a lease lost, a provider paused, a budget spent)
// are logged with log_event. In text mode the line is the readable message;
// with --log-format json it is one object with "event" and the event's
// fields at the top level beside "msg", so a log pipeline can filter and
// aggregate them without parsing prose.

#include <spdlog/common.h>

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace spool {

/// Configures the default logger. `level`: trace, debug, info, warn, error,
/// critical, off. `format`: text or json. Throws std::invalid_argument naming
/// the bad value.
void setup_logging(const std::string& level, const std::string& format);

/// Escapes `s` for inclusion in a JSON string literal.
std::string json_escape(std::string_view s);

/// One field of an event: a name and a string, integer, number or flag.
struct event_field {
  using value_type = std::variant<std::string_view, int64_t, double, bool>;
  std::string_view name;
  value_type value;

  event_field(std::string_view n, std::string_view v) : name(n), value(v) {}
  event_field(std::string_view n, const std::string& v) : name(n), value(std::string_view{v}) {}
  event_field(std::string_view n, const char* v) : name(n), value(std::string_view{v}) {}
  event_field(std::string_view n, bool v) : name(n), value(v) {}
  event_field(std::string_view n, double v) : name(n), value(v) {}
  template <class T>
    requires std::is_integral_v<T>
  event_field(std::string_view n, T v) : name(n), value(static_cast<int64_t>(v)) {}
};

/// Logs event `name` at `level`: `text` in text mode; in JSON mode an
/// object with "event": name, each field, and "msg": text. Costs nothing
/// past a level check when the level is off.
void log_event(spdlog::level::level_enum level, std::string_view name,
               std::span<const event_field> fields, std::string_view text);
inline void log_event(spdlog::level::level_enum level, std::string_view name,
                      std::initializer_list<event_field> fields, std::string_view text) {
  log_event(level, name, std::span<const event_field>{fields.begin(), fields.size()}, text);
}

/// The JSON members of `fields` and the message, as log_event writes them
/// after the common ones: "event":"name","k":v,...,"msg":"text".
std::string event_members(std::string_view name, std::span<const event_field> fields,
                          std::string_view text);

} // namespace spool
