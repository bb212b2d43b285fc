#include "runtime/logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
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

/// Whether the default logger writes JSON.
std::atomic<bool> json_mode{false};

/// Starts the payload of an event in JSON mode: the rest is JSON members.
constexpr char event_mark = '\x1e';

/// %j: the message as the JSON member "msg"; an event's members as they are.
class json_message_flag : public spdlog::custom_flag_formatter {
public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    std::string_view payload{msg.payload.data(), msg.payload.size()};
    if (!payload.empty() && payload.front() == event_mark) {
      dest.append(payload.data() + 1, payload.data() + payload.size());
      return;
    }
    static constexpr std::string_view open = "\"msg\":\"";
    dest.append(open.data(), open.data() + open.size());
    auto escaped = json_escape(payload);
    dest.append(escaped.data(), escaped.data() + escaped.size());
    dest.push_back('"');
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
      R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","pid":%P,"thread":%t,%j})");
    logger->set_formatter(std::move(formatter));
  } else if (format == "text") {
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
  } else {
    throw std::invalid_argument("--log-format: unknown format '" + format
                                + "' (text, json)");
  }
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::warn);
  json_mode = format == "json";
  spdlog::set_default_logger(std::move(logger));
}

std::string event_members(std::string_view name, std::span<const event_field> fields,
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
               std::span<const event_field> fields, std::string_view text) {
  if (!spdlog::should_log(level))
    return;
  if (json_mode)
    spdlog::log(level, "{}{}", event_mark, event_members(name, fields, text));
  else
    spdlog::log(level, "{}", text);
}

} // namespace spool
