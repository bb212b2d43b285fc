#include "runtime/logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace spool {

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

namespace {

/// Logs events in JSON mode (null in text mode): the same sink as the
/// default logger, a pattern that takes the payload as JSON members.
std::shared_ptr<spdlog::logger> event_logger;

/// %j: the message, escaped for a JSON string.
class json_message_flag : public spdlog::custom_flag_formatter {
public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    auto escaped = json_escape({msg.payload.data(), msg.payload.size()});
    dest.append(escaped.data(), escaped.data() + escaped.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<json_message_flag>();
  }
};

} // namespace

void setup_logging(const std::string& level, const std::string& format) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off")
    throw std::invalid_argument("--log-level: unknown level '" + level
                                + "' (trace, debug, info, warn, error, critical, off)");
  auto logger = std::make_shared<spdlog::logger>(
    "spool", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (format == "json") {
    auto formatter = std::make_unique<spdlog::pattern_formatter>(
      spdlog::pattern_time_type::utc);
    formatter->add_flag<json_message_flag>('j').set_pattern(
      R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","pid":%P,"thread":%t,"msg":"%j"})");
    logger->set_formatter(std::move(formatter));
  } else if (format == "text") {
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
  } else {
    throw std::invalid_argument("--log-format: unknown format '" + format
                                + "' (text, json)");
  }
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::warn);
  if (format == "json") {
    auto events = std::make_shared<spdlog::logger>("spool.event", logger->sinks().begin(),
                                                   logger->sinks().end());
    events->set_formatter(std::make_unique<spdlog::pattern_formatter>(
      R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","pid":%P,"thread":%t,%v})",
      spdlog::pattern_time_type::utc));
    events->set_level(lvl);
    events->flush_on(spdlog::level::warn);
    std::atomic_store(&event_logger, std::move(events));
  } else {
    std::atomic_store(&event_logger, std::shared_ptr<spdlog::logger>{});
  }
  spdlog::set_default_logger(std::move(logger));
}

std::string event_members(std::string_view name, std::initializer_list<event_field> fields,
                          std::string_view text) {
  std::string out;
  out.reserve(64 + text.size() + fields.size() * 24);
  out += "\"event\":\"";
  out += json_escape(name);
  out += '"';
  for (const auto& f : fields) {
    out += ",\"";
    out += json_escape(f.name);
    out += "\":";
    std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string_view>) {
          out += '"';
          out += json_escape(v);
          out += '"';
        } else if constexpr (std::is_same_v<T, bool>) {
          out += v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          if (std::isfinite(v)) {
            char buf[32];
            auto r = std::to_chars(buf, buf + sizeof buf, v); // shortest round trip
            out.append(buf, r.ptr);
          } else {
            out += "null";
          }
        } else {
          out += std::to_string(v);
        }
      },
      f.value);
  }
  out += ",\"msg\":\"";
  out += json_escape(text);
  out += '"';
  return out;
}

void log_event(spdlog::level::level_enum level, std::string_view name,
               std::initializer_list<event_field> fields, std::string_view text) {
  auto events = std::atomic_load(&event_logger);
  if (!events) {
    spdlog::log(level, "{}", text);
    return;
  }
  if (!events->should_log(level))
    return;
  events->log(level, "{}", event_members(name, fields, text));
}

} // namespace spool
