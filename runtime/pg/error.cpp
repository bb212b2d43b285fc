#include "runtime/pg/error.hpp"

#include <regex>

namespace spool::pg {

namespace {

/// `s` on one line: every run of whitespace that holds a line break becomes
/// one space (libpq's messages span lines: "server closed the connection
/// unexpectedly\n\tThis probably means ..."), and the ends are trimmed.
std::string one_line(std::string s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '\n' || s[i] == '\r' || s[i] == ' ' || s[i] == '\t') {
      size_t j = i;
      bool breaks = false;
      while (j < s.size() && (s[j] == '\n' || s[j] == '\r' || s[j] == ' ' || s[j] == '\t')) {
        breaks = breaks || s[j] == '\n' || s[j] == '\r';
        ++j;
      }
      if (!out.empty() && j < s.size())
        out += breaks ? std::string{" "} : s.substr(i, j - i);
      i = j;
    } else {
      out += s[i++];
    }
  }
  return out;
}

std::string compose(const std::string& context, const std::string& message,
                    const std::string& sqlstate) {
  std::string out = context.empty() ? message : context + ": " + message;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' '))
    out.pop_back();
  if (!sqlstate.empty())
    out += " (SQLSTATE " + sqlstate + ")";
  return out;
}

} // namespace

error::error(std::string context, std::string message, std::string sqlstate,
             bool connection_lost)
  : std::runtime_error(compose(one_line(context), one_line(message), sqlstate)),
    context_(one_line(std::move(context))),
    message_(one_line(std::move(message))),
    sqlstate_(std::move(sqlstate)),
    connection_lost_(connection_lost) {
}

std::string redact_url(const std::string& url) {
  // URL form: scheme://user:password@host...
  static const std::regex url_password{R"(^([a-z]+://[^:/@]*):[^@]*@)"};
  // keyword form: password=secret or password='se cret'
  static const std::regex kw_password{R"(password\s*=\s*('[^']*'|\S+))"};
  // query parameter form: ?password=secret
  static const std::regex query_password{R"(([?&]password=)[^&]*)"};
  if (url.find("://") != std::string::npos)
    return std::regex_replace(std::regex_replace(url, url_password, "$1:***@"),
                              query_password, "$1***");
  return std::regex_replace(url, kw_password, "password=***");
}

} // namespace spool::pg
