#include "tests/support/tools.hpp"

#include "tests/support/cli.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace spool::test {

tool_result run_shell(const std::string& cmd) {
  tool_result r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr)
    return r;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr)
    r.out += buf;
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string shell_word(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  return q + "'";
}

tool_result promtool_check_metrics(const std::string& text) {
  auto file = temp_file(text, ".prom");
  auto r = run_shell("promtool check metrics < " + shell_word(file));
  std::remove(file.c_str());
  return r;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

http_reply http_request(int port, const std::string& method, const std::string& path,
                        double timeout_s, const std::string& body,
                        const std::vector<std::string>& headers, bool chunked) {
  http_reply out;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return out;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return out;
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  for (const auto& h : headers)
    req += h + "\r\n";
  if (chunked) {
    req += "Transfer-Encoding: chunked\r\n\r\n";
    for (std::size_t at = 0; at < body.size(); at += 65536) {
      auto part = body.substr(at, 65536);
      char size[24];
      std::snprintf(size, sizeof size, "%zx\r\n", part.size());
      req += size + part + "\r\n";
    }
    req += "0\r\n\r\n";
  } else {
    if (!body.empty() || method == "POST" || method == "PATCH")
      req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    req += "\r\n" + body;
  }
  for (size_t sent = 0; sent < req.size();) {
    auto n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0)
      break; // the server may have answered early (a 413): read it
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  char buf[16384];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - std::chrono::steady_clock::now())
                  .count();
    if (left <= 0)
      break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0)
      break;
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      // The server closed: the answer is complete.
      auto end = raw.find("\r\n\r\n");
      if (raw.rfind("HTTP/1.", 0) == 0 && end != std::string::npos) {
        out.status = std::stoi(raw.substr(9, 3));
        out.headers = raw.substr(0, end);
        out.body = raw.substr(end + 4);
      }
      break;
    }
    raw.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

} // namespace spool::test
