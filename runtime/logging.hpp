#pragma once
// Process-wide logging: spdlog to stderr, human-readable text or one JSON
// object a line.

#include <string>

namespace spool {

/// Configures the default logger. `level`: trace, debug, info, warn, error,
/// critical, off. `format`: text or json. Throws std::invalid_argument naming
/// the bad value.
void setup_logging(const std::string& level, const std::string& format);

/// Escapes `s` for inclusion in a JSON string literal.
std::string json_escape(std::string_view s);

} // namespace spool
