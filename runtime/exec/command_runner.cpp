#include "runtime/exec/command_runner.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace spool::exec {

namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t stderr_tail_bytes = 4096;
constexpr std::size_t read_chunk = 64 * 1024;
/// Reads per pipe per poll round, so one chatty child cannot starve others.
constexpr int reads_per_round = 16;
/// Reads when draining the pipes of a child that exited.
constexpr int reads_at_exit = 1024;

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

// -- file descriptors ---------------------------------------------------------

void close_fd(int& fd) noexcept {
  if (fd >= 0) {
    ::close(fd);
    fd = -1;
  }
}

/// Moves `fd` above 2 so that the dup2 file actions onto 0, 1 and 2 cannot
/// clobber each other (only when the process runs with 0-2 closed).
bool lift_fd(int& fd) noexcept {
  if (fd > 2)
    return true;
  int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (moved < 0)
    return false;
  ::close(fd);
  fd = moved;
  return true;
}

bool set_nonblocking(int fd) noexcept {
  int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

int open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void) pid;
  errno = ENOSYS;
  return -1;
#endif
}

/// Swallows a SIGPIPE raised by a write on this thread (it is blocked here).
void consume_sigpipe() noexcept {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  timespec zero{0, 0};
  while (::sigtimedwait(&set, nullptr, &zero) > 0) {
  }
}

/// Appends to `buf`, keeping its last `cap` bytes. Trims lazily (once the
/// excess reaches a quarter of cap) so trimming costs O(1) per byte.
void append_tail(std::string& buf, const char* data, std::size_t n,
                 std::size_t cap, bool& truncated) {
  if (n >= cap) {
    truncated = truncated || !buf.empty() || n > cap;
    buf.assign(data + (n - cap), cap);
    return;
  }
  buf.append(data, n);
  std::size_t slack = std::max<std::size_t>(cap / 4, read_chunk);
  if (buf.size() > cap + slack) {
    buf.erase(0, buf.size() - cap);
    truncated = true;
  }
}

void trim_tail(std::string& buf, std::size_t cap, bool& truncated) {
  if (buf.size() > cap) {
    buf.erase(0, buf.size() - cap);
    truncated = true;
  }
}

// -- spawning -----------------------------------------------------------------

/// RAII for the posix_spawn attribute objects.
struct spawn_setup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  spawn_setup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~spawn_setup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  spawn_setup(const spawn_setup&) = delete;
  spawn_setup& operator=(const spawn_setup&) = delete;
};

bool is_executable_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)
         && ::access(path.c_str(), X_OK) == 0;
}

/// The path to exec for argv[0]; empty with `error` and `error_code` set
/// when none.
std::string resolve_program(const command_spec& spec, std::string& error,
                            int& error_code) {
  const std::string& name = spec.argv.front();
  if (name.empty()) {
    error = "argv[0] is empty";
    error_code = EINVAL;
    return {};
  }
  if (name.find('/') != std::string::npos) {
    if (name.front() == '/')
      return name;
    char cwd[4096];
    if (!::getcwd(cwd, sizeof(cwd))) {
      error_code = errno;
      error = name + ": cannot resolve against the current directory: "
              + errno_text(error_code);
      return {};
    }
    return std::string{cwd} + '/' + name;
  }
  std::string path;
  if (auto i = spec.env.find("PATH"); i != spec.env.end())
    path = i->second;
  else if (const char* p = std::getenv("PATH"))
    path = p;
  else
    path = "/usr/local/bin:/usr/bin:/bin";
  std::size_t pos = 0;
  for (;;) {
    std::size_t end = path.find(':', pos);
    std::string dir = path.substr(pos, end == std::string::npos
                                         ? std::string::npos
                                         : end - pos);
    std::string candidate = (dir.empty() ? std::string{"."} : dir) + '/'
                            + name;
    if (is_executable_file(candidate))
      return candidate;
    if (end == std::string::npos)
      break;
    pos = end + 1;
  }
  error = name + ": not found in PATH (" + path + ")";
  error_code = ENOENT;
  return {};
}

/// The inherited environment with `overrides` applied, as "K=V" strings.
std::vector<std::string>
make_environment(const std::map<std::string, std::string>& overrides) {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv{*e};
    auto eq = kv.find('=');
    auto key = kv.substr(0, eq);
    if (overrides.find(std::string{key}) == overrides.end())
      out.emplace_back(kv);
  }
  for (const auto& [k, v] : overrides)
    out.push_back(k + '=' + v);
  return out;
}

} // namespace

// -- state --------------------------------------------------------------------

struct command_runner::impl {
  using ending = command_result::ending;

  struct child {
    id which = 0;
    pid_t pid = -1;
    int pidfd = -1;
    int in_fd = -1; // our write end of the child's stdin
    int out_fd = -1;
    int err_fd = -1;
    std::string stdin_data;
    std::size_t stdin_off = 0;
    command_result result;
    std::size_t max_stdout = 0;
    bool stderr_cut = false; // a stderr_tail is always a tail: not reported
    clock::time_point started;
    clock::time_point deadline = clock::time_point::max();
    clock::time_point kill_at = clock::time_point::max();
    milliseconds grace{0};
    bool stopping = false; // timed out or cancelled: result.how is set
    bool exited = false;
    std::function<void(command_result)> on_done;

    ~child() {
      close_fd(pidfd);
      close_fd(in_fd);
      close_fd(out_fd);
      close_fd(err_fd);
    }
  };

  struct pending_start {
    id which;
    command_spec spec;
    std::function<void(command_result)> on_done;
  };

  explicit impl(command_runner_options opts) : options(opts) {
    wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0)
      throw std::system_error(errno, std::generic_category(),
                              "command_runner: eventfd");
    use_pidfd = options.use_pidfd;
  }

  ~impl() {
    close_fd(wake_fd);
  }

  void wake() noexcept {
    uint64_t one = 1;
    // EAGAIN only when the counter is saturated: a wake-up is pending anyway.
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof(one));
  }

  // -- runner thread ----------------------------------------------------------

  void run();
  std::unique_ptr<child> spawn(pending_start& p);
  void begin_stop(child& c, ending why, clock::time_point now);
  void on_timers(child& c, clock::time_point now);
  void write_stdin(child& c);
  bool read_pipe(child& c, int& fd, bool is_stdout, int max_reads);
  bool check_exit(child& c);
  void finish(child& c);
  void deliver(std::function<void(command_result)>& on_done,
               command_result result);

  command_runner_options options;
  int wake_fd = -1;
  std::atomic<id> next_id{1};
  std::atomic<std::size_t> running{0};

  std::mutex mtx;
  std::vector<pending_start> starts; // guarded by mtx
  std::vector<id> cancels;           // guarded by mtx
  bool stopping = false;             // guarded by mtx
  std::unordered_set<pid_t> groups;  // guarded by mtx: live process groups

  // Owned by the runner thread.
  bool use_pidfd = true;
  std::unordered_map<id, std::unique_ptr<child>> children;

  std::thread thread;
};

void command_runner::impl::deliver(
  std::function<void(command_result)>& on_done, command_result result) {
  --running;
  try {
    if (on_done)
      on_done(std::move(result));
  } catch (const std::exception& e) {
    spdlog::error("command runner: on_done threw: {}", e.what());
  } catch (...) {
    spdlog::error("command runner: on_done threw a non-exception");
  }
}

std::unique_ptr<command_runner::impl::child>
command_runner::impl::spawn(pending_start& p) {
  auto c = std::make_unique<child>();
  c->which = p.which;
  auto& spec = p.spec;
  auto fail = [&](std::string why, int err) {
    c->result.how = ending::spawn_failed;
    c->result.error = std::move(why);
    c->result.error_code = err;
    return std::move(c);
  };

  if (spec.argv.empty())
    return fail("argv is empty", EINVAL);
  std::string error;
  int error_code = 0;
  std::string program = resolve_program(spec, error, error_code);
  if (program.empty())
    return fail(std::move(error), error_code);
  if (!spec.cwd.empty()) {
    struct stat st;
    if (::stat(spec.cwd.c_str(), &st) != 0) {
      int e = errno;
      return fail("cwd " + spec.cwd + ": " + errno_text(e), e);
    }
    if (!S_ISDIR(st.st_mode))
      return fail("cwd " + spec.cwd + ": " + errno_text(ENOTDIR), ENOTDIR);
  }

  // Pipes: [0] read end, [1] write end; all close-on-exec.
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  auto close_all = [&] {
    for (int* fds : {in, out, err}) {
      close_fd(fds[0]);
      close_fd(fds[1]);
    }
  };
  for (int* fds : {in, out, err}) {
    if (::pipe2(fds, O_CLOEXEC) != 0 || !lift_fd(fds[0]) || !lift_fd(fds[1])) {
      int e = errno;
      close_all();
      return fail("creating pipes: " + errno_text(e), e);
    }
  }

  spawn_setup setup;
  posix_spawn_file_actions_adddup2(&setup.actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&setup.actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&setup.actions, err[1], 2);
  if (!spec.cwd.empty())
    posix_spawn_file_actions_addchdir_np(&setup.actions, spec.cwd.c_str());
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 34)
  // Fds leaked without O_CLOEXEC by other code must not reach the child.
  posix_spawn_file_actions_addclosefrom_np(&setup.actions, 3);
#endif
  // Own process group; no blocked signals (this thread blocks SIGPIPE);
  // default dispositions (an ignored SIGPIPE or SIGTERM would survive exec).
  posix_spawnattr_setflags(&setup.attr, POSIX_SPAWN_SETPGROUP
                                          | POSIX_SPAWN_SETSIGMASK
                                          | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&setup.attr, 0);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&setup.attr, &none);
  posix_spawnattr_setsigdefault(&setup.attr, &all);

  std::vector<char*> argv;
  argv.reserve(spec.argv.size() + 1);
  for (auto& a : spec.argv)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  auto env = make_environment(spec.env);
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, program.c_str(), &setup.actions, &setup.attr,
                         argv.data(), envp.data());
  c->started = clock::now();
  close_fd(in[0]);
  close_fd(out[1]);
  close_fd(err[1]);
  if (rc != 0) {
    close_all();
    std::string why = spec.argv.front() + ": " + errno_text(rc);
    if (rc == ENOENT && !spec.cwd.empty())
      why += " (or cwd " + spec.cwd + " vanished)";
    return fail(std::move(why), rc);
  }

  c->pid = pid;
  c->result.pid = pid;
  c->in_fd = in[1];
  c->out_fd = out[0];
  c->err_fd = err[0];
  set_nonblocking(c->in_fd);
  set_nonblocking(c->out_fd);
  set_nonblocking(c->err_fd);
  if (use_pidfd) {
    c->pidfd = open_pidfd(pid);
    if (c->pidfd < 0 && errno == ENOSYS) {
      spdlog::warn("command runner: pidfd_open unavailable, polling for "
                   "exits every {} ms",
                   options.exit_poll_interval.count());
      use_pidfd = false;
    }
  }
  c->stdin_data = std::move(spec.stdin_data);
  if (c->stdin_data.empty())
    close_fd(c->in_fd);
  c->max_stdout = spec.max_stdout_bytes;
  c->grace = std::max(spec.kill_grace, milliseconds{0});
  if (spec.timeout > milliseconds{0})
    c->deadline = c->started + spec.timeout;
  c->result.how = ending::exited;
  return c;
}

void command_runner::impl::begin_stop(child& c, ending why,
                                      clock::time_point now) {
  if (c.stopping || c.exited)
    return;
  c.stopping = true;
  c.result.how = why;
  c.deadline = clock::time_point::max();
  if (c.grace <= milliseconds{0}) {
    ::kill(-c.pid, SIGKILL);
    return;
  }
  ::kill(-c.pid, SIGTERM);
  c.kill_at = now + c.grace;
}

void command_runner::impl::on_timers(child& c, clock::time_point now) {
  if (c.exited)
    return;
  if (now >= c.deadline)
    begin_stop(c, ending::timed_out, now);
  if (now >= c.kill_at) {
    ::kill(-c.pid, SIGKILL);
    c.kill_at = clock::time_point::max();
  }
}

void command_runner::impl::write_stdin(child& c) {
  while (c.in_fd >= 0 && c.stdin_off < c.stdin_data.size()) {
    std::size_t n = std::min<std::size_t>(c.stdin_data.size() - c.stdin_off,
                                          1 << 20);
    ssize_t w = ::write(c.in_fd, c.stdin_data.data() + c.stdin_off, n);
    if (w > 0) {
      c.stdin_off += static_cast<std::size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && errno == EAGAIN)
      return;
    if (w < 0 && errno == EPIPE)
      consume_sigpipe(); // the child stopped reading: not an error
    break;
  }
  close_fd(c.in_fd);
  std::string{}.swap(c.stdin_data);
}

/// Reads what is available; returns false once the pipe is closed.
bool command_runner::impl::read_pipe(child& c, int& fd, bool is_stdout,
                                     int max_reads) {
  char buf[read_chunk];
  for (int i = 0; fd >= 0 && i < max_reads; ++i) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n > 0) {
      auto len = static_cast<std::size_t>(n);
      if (is_stdout)
        append_tail(c.result.stdout_data, buf, len, c.max_stdout,
                    c.result.stdout_truncated);
      else
        append_tail(c.result.stderr_tail, buf, len, stderr_tail_bytes,
                    c.stderr_cut);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      return true;
    close_fd(fd); // EOF or error
  }
  return fd >= 0;
}

/// True once the child has exited; it is then reaped and `c.exited` set.
bool command_runner::impl::check_exit(child& c) {
  siginfo_t info;
  std::memset(&info, 0, sizeof(info));
  int r = ::waitid(P_PID, static_cast<id_t>(c.pid), &info,
                   WEXITED | WNOHANG | WNOWAIT);
  if (r == 0 && info.si_pid == 0)
    return false; // still running
  if (r != 0 && errno == EINTR)
    return false;
  c.exited = true;
  if (r != 0) {
    // ECHILD: someone else reaped it (SIGCHLD ignored, waitpid(-1) elsewhere).
    // The pid may be reused already: signal nothing.
    spdlog::warn("command runner: pid {} was reaped elsewhere: {}", c.pid,
                 errno_text(errno));
    return true;
  }
  // The leader is a zombie, so its group id cannot be reused yet: kill what
  // it left behind, then reap it.
  ::kill(-c.pid, SIGKILL);
  int status = 0;
  pid_t w;
  do
    w = ::waitpid(c.pid, &status, 0);
  while (w < 0 && errno == EINTR);
  if (w == c.pid) {
    if (WIFEXITED(status)) {
      c.result.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      c.result.signal = WTERMSIG(status);
      if (!c.stopping)
        c.result.how = ending::signaled;
    }
  }
  return true;
}

void command_runner::impl::finish(child& c) {
  // Whatever the child wrote before exiting is in the pipe buffers.
  read_pipe(c, c.out_fd, true, reads_at_exit);
  read_pipe(c, c.err_fd, false, reads_at_exit);
  trim_tail(c.result.stdout_data, c.max_stdout, c.result.stdout_truncated);
  trim_tail(c.result.stderr_tail, stderr_tail_bytes, c.stderr_cut);
  c.result.elapsed =
    std::chrono::duration_cast<milliseconds>(clock::now() - c.started);
  close_fd(c.in_fd);
  close_fd(c.out_fd);
  close_fd(c.err_fd);
  close_fd(c.pidfd);
}

void command_runner::impl::run() {
  // Writes to a closed stdin raise SIGPIPE on this thread; keep it pending
  // (then consume it) instead of letting it kill the process.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);

  enum class fd_role { in, out, err, pid };
  std::vector<pollfd> fds;
  std::vector<std::pair<child*, fd_role>> owners;
  std::vector<id> done;
  bool shutting_down = false;

  for (;;) {
    // -- intake ---------------------------------------------------------------
    std::vector<pending_start> new_starts;
    std::vector<id> new_cancels;
    bool stop;
    {
      std::lock_guard guard{mtx};
      new_starts.swap(starts);
      new_cancels.swap(cancels);
      stop = stopping;
    }
    auto now = clock::now();
    for (auto& p : new_starts) {
      if (stop) {
        command_result r;
        r.how = ending::cancelled;
        deliver(p.on_done, std::move(r));
        continue;
      }
      std::unique_ptr<child> c;
      try {
        c = spawn(p);
      } catch (const std::exception& e) {
        command_result r;
        r.error = std::string{"spawning: "} + e.what();
        r.error_code = ENOMEM;
        deliver(p.on_done, std::move(r));
        continue;
      }
      if (c->pid < 0) {
        deliver(p.on_done, std::move(c->result));
        continue;
      }
      c->on_done = std::move(p.on_done);
      write_stdin(*c);
      {
        std::lock_guard guard{mtx};
        groups.insert(c->pid);
      }
      auto which = c->which;
      children.emplace(which, std::move(c));
    }
    now = clock::now();
    for (auto which : new_cancels)
      if (auto i = children.find(which); i != children.end())
        begin_stop(*i->second, ending::cancelled, now);
    if (stop && !shutting_down) {
      shutting_down = true;
      for (auto& [_, c] : children)
        begin_stop(*c, ending::cancelled, now);
    }
    if (shutting_down && children.empty()) {
      std::lock_guard guard{mtx};
      if (starts.empty())
        break; // on_done callbacks started nothing new
      continue;
    }

    // -- poll -----------------------------------------------------------------
    fds.clear();
    owners.clear();
    fds.push_back({wake_fd, POLLIN, 0});
    owners.emplace_back(nullptr, fd_role::pid);
    auto next_timer = clock::time_point::max();
    bool need_exit_poll = false;
    for (auto& [_, cp] : children) {
      child& c = *cp;
      if (c.in_fd >= 0) {
        fds.push_back({c.in_fd, POLLOUT, 0});
        owners.emplace_back(&c, fd_role::in);
      }
      if (c.out_fd >= 0) {
        fds.push_back({c.out_fd, POLLIN, 0});
        owners.emplace_back(&c, fd_role::out);
      }
      if (c.err_fd >= 0) {
        fds.push_back({c.err_fd, POLLIN, 0});
        owners.emplace_back(&c, fd_role::err);
      }
      if (c.pidfd >= 0) {
        fds.push_back({c.pidfd, POLLIN, 0});
        owners.emplace_back(&c, fd_role::pid);
      } else {
        need_exit_poll = true;
      }
      next_timer = std::min({next_timer, c.deadline, c.kill_at});
    }
    int timeout_ms = -1;
    if (next_timer != clock::time_point::max()) {
      auto left = next_timer - clock::now();
      // Round up so that we never wake just before a deadline and spin.
      auto ms = std::chrono::ceil<milliseconds>(left).count();
      timeout_ms = static_cast<int>(std::clamp<long long>(ms, 0, 60'000));
    }
    if (need_exit_poll) {
      auto interval = static_cast<int>(options.exit_poll_interval.count());
      interval = std::max(interval, 1);
      timeout_ms = timeout_ms < 0 ? interval : std::min(timeout_ms, interval);
    }
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0 && errno != EINTR) {
      spdlog::error("command runner: poll: {}", errno_text(errno));
      std::this_thread::sleep_for(milliseconds{10});
    }

    // -- events ---------------------------------------------------------------
    done.clear();
    for (std::size_t i = 0; n > 0 && i < fds.size(); ++i) {
      if (fds[i].revents == 0)
        continue;
      auto [c, role] = owners[i];
      if (!c) {
        uint64_t count;
        [[maybe_unused]] auto r = ::read(wake_fd, &count, sizeof(count));
        continue;
      }
      switch (role) {
        case fd_role::in:
          write_stdin(*c);
          break;
        case fd_role::out:
          read_pipe(*c, c->out_fd, true, reads_per_round);
          break;
        case fd_role::err:
          read_pipe(*c, c->err_fd, false, reads_per_round);
          break;
        case fd_role::pid:
          if (!c->exited && check_exit(*c))
            done.push_back(c->which);
          break;
      }
    }
    now = clock::now();
    for (auto& [which, cp] : children) {
      child& c = *cp;
      if (!c.exited && c.pidfd < 0 && check_exit(c))
        done.push_back(which);
      on_timers(c, now);
    }

    // -- completions ----------------------------------------------------------
    for (auto which : done) {
      auto i = children.find(which);
      if (i == children.end())
        continue;
      auto c = std::move(i->second);
      children.erase(i);
      {
        std::lock_guard guard{mtx};
        groups.erase(c->pid);
      }
      finish(*c);
      deliver(c->on_done, std::move(c->result));
    }
  }
}

// -- public API ---------------------------------------------------------------

command_runner::command_runner() : command_runner(command_runner_options{}) {
}

command_runner::command_runner(command_runner_options options)
  : impl_(std::make_unique<impl>(options)) {
  impl_->thread = std::thread([this] { impl_->run(); });
}

command_runner::~command_runner() {
  {
    std::lock_guard guard{impl_->mtx};
    impl_->stopping = true;
  }
  impl_->wake();
  if (impl_->thread.joinable())
    impl_->thread.join();
}

command_runner::id command_runner::start(
  command_spec spec, std::function<void(command_result)> on_done) {
  id which = impl_->next_id++;
  ++impl_->running;
  {
    std::lock_guard guard{impl_->mtx};
    impl_->starts.push_back({which, std::move(spec), std::move(on_done)});
  }
  impl_->wake();
  return which;
}

void command_runner::cancel(id which) {
  {
    std::lock_guard guard{impl_->mtx};
    impl_->cancels.push_back(which);
  }
  impl_->wake();
}

void command_runner::kill_all_now() noexcept {
  std::lock_guard guard{impl_->mtx};
  for (auto pgid : impl_->groups)
    ::kill(-pgid, SIGKILL);
}

std::size_t command_runner::running() const {
  return impl_->running.load();
}

} // namespace spool::exec
