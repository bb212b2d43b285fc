#pragma once
// A running `spool serve` on a port of the system's choosing, for tests
// and benches of the client API.

#include "tests/support/cli.hpp"
#include "tests/support/wait.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <map>
#include <string>

namespace spool::test {

struct serve_process {
  spool_process proc;
  int port = 0;

  serve_process(const std::string& cfg, const std::map<std::string, std::string>& env)
    : proc({"serve", "--config", cfg, "--http", "127.0.0.1:0"}, env) {
    REQUIRE(eventually([&] {
      auto out = proc.output();
      auto at = out.find("spool serve: http://127.0.0.1:");
      if (at == std::string::npos)
        return false;
      port = std::stoi(out.substr(at + 30));
      return true;
    }));
  }
  ~serve_process() {
    proc.signal(SIGTERM);
    proc.wait(10);
  }
  serve_process(const serve_process&) = delete;
  serve_process& operator=(const serve_process&) = delete;
};

} // namespace spool::test
