#include "tests/support/cli.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>

namespace spool::test {

[[noreturn]] void exec_spool(const std::vector<std::string>& args,
                             const std::map<std::string, std::string>& env) {
  // SPOOL_BENCH_BINARY runs another build of spool (a bench comparing
  // before and after a change, in one run, against the same schema).
  const char* other = std::getenv("SPOOL_BENCH_BINARY");
  std::vector<std::string> argv_s{other != nullptr && *other != '\0' ? other : SPOOL_BINARY};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  // Workers of tests and benches serve their endpoint on a port of the
  // system's choosing (found in workers.http_address): many run at once.
  ::setenv("SPOOL_HTTP", "127.0.0.1:0", 0);
  for (auto& [k, v] : env) {
    if (v == "<unset>")
      ::unsetenv(k.c_str());
    else
      ::setenv(k.c_str(), v.c_str(), 1);
  }
  ::execv(argv[0], argv.data());
  ::_exit(127);
}

cli_result run_spool(const std::vector<std::string>& args,
                     const std::map<std::string, std::string>& env,
                     const std::string& stdin_data) {
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) || ::pipe2(err_pipe, O_CLOEXEC)
      || ::pipe2(in_pipe, O_CLOEXEC))
    throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    exec_spool(args, env);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (!stdin_data.empty()) {
    size_t off = 0;
    while (off < stdin_data.size()) {
      auto n = ::write(in_pipe[1], stdin_data.data() + off, stdin_data.size() - off);
      if (n <= 0)
        break;
      off += static_cast<size_t>(n);
    }
  }
  ::close(in_pipe[1]);
  cli_result res;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&res.out, &res.err};
  int open_fds = 2;
  std::array<char, 4096> buf;
  while (open_fds > 0) {
    if (::poll(fds, 2, -1) < 0 && errno != EINTR)
      break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP)))
        continue;
      auto n = ::read(fds[i].fd, buf.data(), buf.size());
      if (n > 0) {
        sinks[i]->append(buf.data(), static_cast<size_t>(n));
      } else {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  res.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return res;
}

namespace {

/// In a forked child: stdout and stderr to `log`, stdin from /dev/null.
void redirect_child(const std::string& log) {
  int fd = ::open(log.c_str(), O_WRONLY | O_TRUNC);
  ::dup2(fd, 1);
  ::dup2(fd, 2);
  int devnull = ::open("/dev/null", O_RDONLY);
  ::dup2(devnull, 0);
}

} // namespace

spool_process::spool_process(const std::vector<std::string>& args,
                             const std::map<std::string, std::string>& env) {
  log_ = temp_file("", ".log");
  pid_ = ::fork();
  if (pid_ == 0) {
    redirect_child(log_);
    exec_spool(args, env);
  }
}

spool_process::spool_process(other_program, const std::vector<std::string>& argv) {
  log_ = temp_file("", ".log");
  pid_ = ::fork();
  if (pid_ == 0) {
    redirect_child(log_);
    std::vector<std::string> copy = argv;
    std::vector<char*> args;
    for (auto& a : copy)
      args.push_back(a.data());
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
}

spool_process::~spool_process() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    wait(10);
  }
  ::unlink(log_.c_str());
}

void spool_process::signal(int sig) const {
  ::kill(pid_, sig);
}

bool spool_process::running() {
  if (reaped_)
    return false;
  int status = 0;
  struct rusage usage {};
  if (::wait4(pid_, &status, WNOHANG, &usage) == pid_) {
    reaped_ = true;
    max_rss_kb_ = usage.ru_maxrss;
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

int spool_process::wait(double timeout_s) {
  auto deadline = std::chrono::steady_clock::now()
                  + std::chrono::milliseconds{static_cast<int64_t>(timeout_s * 1000)};
  while (running()) {
    if (std::chrono::steady_clock::now() > deadline)
      return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
  return status_;
}

std::string spool_process::output() const {
  std::ifstream in{log_};
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string temp_file(const std::string& text, const std::string& suffix) {
  std::string tmpl = "/tmp/spool_testXXXXXX" + suffix;
  int fd = ::mkstemps(tmpl.data(), static_cast<int>(suffix.size()));
  if (fd < 0)
    throw std::runtime_error("mkstemps failed");
  ::close(fd);
  std::ofstream{tmpl} << text;
  return tmpl;
}

} // namespace spool::test
