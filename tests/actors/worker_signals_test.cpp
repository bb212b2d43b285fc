// `spool run` and the signals a worker meets outside a clean shutdown: a
// closed stdout/stderr pipe (SIGPIPE) and SIGHUP must not stop it. Real
// worker processes against a real PostgreSQL.

#include "runtime/pg/connection.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/worker_fixture.hpp"
#include "tests/support/test_db.hpp"

#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace spool;
using namespace std::chrono_literals;
using test::spool_process;

namespace {

using signals_fixture = test::worker_fixture;

/// A worker config with frequent progress lines, so that the worker keeps
/// writing to its stderr while it works.
std::string chatty_config(const std::string& stages) {
  return test::worker_config(stages, 3, 1, R"(, "progress_log_interval_s": 0.1)");
}

/// `spool args...` with stdout and stderr on one pipe, as in
/// `spool run 2>&1 | head -1`.
class piped_spool {
public:
  piped_spool(const std::vector<std::string>& args,
              const std::map<std::string, std::string>& env) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::dup2(fds[1], 2);
      int devnull = ::open("/dev/null", O_RDONLY);
      ::dup2(devnull, 0);
      test::exec_spool(args, env);
    }
    ::close(fds[1]);
    read_fd_ = fds[0];
  }

  ~piped_spool() {
    close_read_end();
    if (!reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  /// Reads until the first newline (what `head -1` keeps); empty at EOF.
  std::string first_line() {
    std::string line;
    char c;
    while (::read(read_fd_, &c, 1) == 1) {
      line += c;
      if (c == '\n')
        break;
    }
    return line;
  }

  /// What `head` does when it has its line: every later write gets EPIPE.
  void close_read_end() {
    if (read_fd_ >= 0)
      ::close(read_fd_);
    read_fd_ = -1;
  }

  /// Waits up to `timeout_s` for the exit; the exit code (128 + signal when
  /// killed), or -1 on timeout.
  int wait(double timeout_s) {
    auto deadline = std::chrono::steady_clock::now()
                    + std::chrono::milliseconds{static_cast<int64_t>(timeout_s * 1000)};
    while (!reaped_) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (std::chrono::steady_clock::now() > deadline)
        return -1;
      std::this_thread::sleep_for(10ms);
    }
    return code_;
  }

private:
  pid_t pid_ = -1;
  int read_fd_ = -1;
  bool reaped_ = false;
  int code_ = -1;
};

} // namespace

TEST_CASE_METHOD(signals_fixture, "a worker whose output pipe was closed keeps working and "
                                  "finishes its jobs",
                 "[db][worker]") {
  auto cfg = chatty_config(R"(
    {"name": "a", "max_concurrent": 2, "executor": {"latency": {"dist": "fixed",
      "ms": 100}}},
    {"name": "b", "after": ["a"], "max_concurrent": 2, "executor": {"kind": "command",
      "argv": ["sh", "-c", "cat > /dev/null; echo '{\"status\": \"ok\", \"output\": {}}'"]}})");
  enqueue(cfg, 12);
  piped_spool w{{"--log-level", "debug", "run", "--config", cfg, "--exit-when-idle"}, env};
  CHECK_FALSE(w.first_line().empty());
  w.close_read_end();
  // Progress lines every 0.1 s and debug lines per job now all hit EPIPE.
  CHECK(w.wait(120) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 12);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state <> 'done'") == 0);
  std::remove(cfg.c_str());
}

TEST_CASE_METHOD(signals_fixture, "a worker sent SIGHUP keeps running and finishes its jobs",
                 "[db][worker]") {
  auto cfg = chatty_config(R"(
    {"name": "a", "max_concurrent": 2, "timeout_s": 120, "executor": {"kind": "command",
      "argv": ["sh", "-c",
        "cat > /dev/null; sleep 1; echo '{\"status\": \"ok\", \"output\": {}}'"]}})");
  enqueue(cfg, 6);
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  REQUIRE(wait_for("SELECT count(*) FROM stage_runs WHERE state = 'running'", 2));
  w.signal(SIGHUP);
  CHECK(w.wait(120) == 0);
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'completed'") == 6);
  CHECK(scalar("SELECT count(*) FROM stage_attempts") == 6); // none cut short
  CHECK_THAT(w.output(), Catch::Contains("got Hangup: re-reading the configuration"));
  CHECK_THAT(w.output(), Catch::Contains("configuration unchanged (SIGHUP)"));
  CHECK_THAT(w.output(), !Catch::Contains("got Hangup: draining"));
  std::remove(cfg.c_str());
}
