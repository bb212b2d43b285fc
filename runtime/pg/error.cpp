#include "runtime/pg/error.hpp"


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
  // Hand-written rather than <regex>: this file is in every build.
  std::string out = url;
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n'; };
  if (auto scheme = out.find("://"); scheme != std::string::npos) {
    // URL form: scheme://user:password@host...
    auto start = scheme + 3;
    auto at = out.find('@', start);
    auto end_of_user = out.find_first_of(":/@", start);
    if (at != std::string::npos && end_of_user != std::string::npos && out[end_of_user] == ':'
        && end_of_user < at)
      out.replace(end_of_user + 1, at - end_of_user - 1, "***");
    // query parameter form: ?password=secret or &password=secret
    for (auto pos = out.find("password=", start); pos != std::string::npos;
         pos = out.find("password=", pos + 1)) {
      if (pos == 0 || (out[pos - 1] != '?' && out[pos - 1] != '&'))
        continue;
      auto value = pos + 9;
      auto end = out.find('&', value);
      out.replace(value, (end == std::string::npos ? out.size() : end) - value, "***");
    }
    return out;
  }
  // keyword form: password=secret or password = 'se cret'
  for (auto pos = out.find("password"); pos != std::string::npos;
       pos = out.find("password", pos + 1)) {
    auto eq = pos + 8;
    while (eq < out.size() && is_space(out[eq]))
      ++eq;
    if (eq >= out.size() || out[eq] != '=')
      continue;
    auto value = eq + 1;
    while (value < out.size() && is_space(out[value]))
      ++value;
    auto end = value;
    if (end < out.size() && out[end] == '\'') {
      auto close = out.find('\'', end + 1);
      end = close == std::string::npos ? out.size() : close + 1;
    } else {
      while (end < out.size() && !is_space(out[end]))
        ++end;
    }
    out.replace(pos, end - pos, "password=***");
  }
  return out;
}

} // namespace spool::pg
