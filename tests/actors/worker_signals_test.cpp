// `spool run` and the signals a worker meets outside a clean shutdown: a
// closed stdout/stderr pipe (SIGPIPE) and SIGHUP must not stop it. Real
// worker processes against a real PostgreSQL.

#include "runtime/pg/connection.hpp"
#include "tests/support/cli.hpp"
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

struct signals_fixture {
  test::fresh_database db;
  pg::connection conn{db.url()};
  std::map<std::string, std::string> env{{"SPOOL_DATABASE_URL", db.url()}};

  void enqueue(const std::string& config, int n) {
    std::string lines;
    for (int i = 0; i < n; ++i)
      lines += R"({"channel_id":"ch)" + std::to_string(i % 3) + R"(","payload":{}})" + "\n";
    auto res = test::run_spool({"enqueue", "--config", config, "--file", "-"}, env, lines);
    REQUIRE(res.exit_code == 0);
  }

  int64_t scalar(const std::string& sql) { return conn.exec(sql).i64(0, 0); }

  /// Waits until `sql` (a count) reaches at least `n`; false after 30 s.
  bool wait_for(const std::string& sql, int64_t n) {
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (scalar(sql) >= n)
        return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }
};

/// A worker config with frequent progress lines, so that the worker keeps
/// writing to its stderr while it works.
std::string chatty_config(const std::string& stages) {
  return test::temp_file(R"({"worker": {"idle_poll_s": 0.2, "heartbeat_interval_s": 0.5,
    "rescue_interval_s": 0.5, "shutdown_grace_s": 1, "lease_s": 3,
    "progress_log_interval_s": 0.1}, "stages": [)" + stages + "]}");
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
      std::vector<std::string> argv_s{SPOOL_BINARY};
      argv_s.insert(argv_s.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : argv_s)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      for (auto& [k, v] : env)
        ::setenv(k.c_str(), v.c_str(), 1);
      ::execv(argv[0], argv.data());
      ::_exit(127);
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
  CHECK_THAT(w.output(), Catch::Contains("got Hangup: ignored"));
  CHECK_THAT(w.output(), !Catch::Contains("got Hangup: draining"));
  std::remove(cfg.c_str());
}
