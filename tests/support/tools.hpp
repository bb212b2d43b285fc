#pragma once
// Running outside tools from tests (promtool, prometheus) and speaking
// plain HTTP/1.1 to a server under test.

#include <string>
#include <vector>

namespace spool::test {

struct tool_result {
  int exit_code = -1;
  std::string out; // stdout and stderr
};

/// Runs `cmd` through /bin/sh; returns its exit code and what it printed.
tool_result run_shell(const std::string& cmd);

/// `s` quoted as one shell word.
std::string shell_word(const std::string& s);

/// `promtool check metrics` on `text` (its stdin).
tool_result promtool_check_metrics(const std::string& text);

/// The whole content of a file; empty when it cannot be read.
std::string read_text(const std::string& path);

struct http_reply {
  int status = 0; // 0: no answer (refused, timed out)
  std::string headers;
  std::string body;
};

/// `method path` to 127.0.0.1:port over a new connection (HTTP/1.1,
/// Connection: close), with `headers` ("Name: value" each), waiting at most
/// `timeout_s` for the whole answer. `chunked`: the body goes in chunks of
/// 64 KiB without a Content-Length (the server learns its size only while
/// reading it).
http_reply http_request(int port, const std::string& method, const std::string& path,
                        double timeout_s = 10, const std::string& body = {},
                        const std::vector<std::string>& headers = {}, bool chunked = false);
inline http_reply http_get(int port, const std::string& path, double timeout_s = 10) {
  return http_request(port, "GET", path, timeout_s);
}

} // namespace spool::test
