#pragma once
// A running `spool serve` on a port of the system's choosing, for tests
// and benches of the client API.

#include "tests/support/cli.hpp"
#include "tests/support/wait.hpp"

#include <csignal>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace spool::test {

struct serve_process {
  spool_process proc;
  int port = 0;

  /// Starts it; throws std::runtime_error with its output when it does not
  /// say where it listens within 30 s.
  serve_process(const std::string& cfg, const std::map<std::string, std::string>& env,
                const std::vector<std::string>& global_args = {})
    : proc(args(cfg, global_args), env) {
    const std::string marker = "spool serve: http://127.0.0.1:";
    bool up = eventually([&] {
      auto out = proc.output();
      auto at = out.find(marker);
      if (at == std::string::npos)
        return false;
      port = std::stoi(out.substr(at + marker.size()));
      return true;
    });
    if (!up)
      throw std::runtime_error("spool serve did not start:\n" + proc.output());
  }
  ~serve_process() {
    proc.signal(SIGTERM);
    proc.wait(10);
  }
  serve_process(const serve_process&) = delete;
  serve_process& operator=(const serve_process&) = delete;

private:
  static std::vector<std::string> args(const std::string& cfg,
                                       const std::vector<std::string>& global_args) {
    auto a = global_args;
    for (const char* x : {"serve", "--config"})
      a.push_back(x);
    a.push_back(cfg);
    a.push_back("--http");
    a.push_back("127.0.0.1:0");
    return a;
  }
};

} // namespace spool::test
