#include "runtime/pg/error.hpp"

#include <regex>

namespace spool::pg {

namespace {

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
  : std::runtime_error(compose(context, message, sqlstate)),
    context_(std::move(context)),
    message_(std::move(message)),
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
