#include "runtime/exec/command_runner.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <string_view>
#include <system_error>
#include <thread>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
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

/// The path to exec for argv[0], looked up in `path` (the child's PATH)
/// when it has no '/'; empty with `error` and `error_code` set when none.
std::string resolve_program(const command_spec& spec, const std::string& path,
                            std::string& error, int& error_code) {
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

/// Whether `name` is one of `patterns` (a pattern ending in '*' matches
/// every name with that prefix).
bool name_matches(std::string_view name, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) {
    if (!p.empty() && p.back() == '*') {
      if (name.substr(0, p.size() - 1) == std::string_view{p}.substr(0, p.size() - 1))
        return true;
    } else if (name == p) {
      return true;
    }
  }
  return false;
}

/// The child's whole environment as "K=V" strings: the runner's variables
/// that `spec.inherit_env` names, then `spec.env`, then the job token.
std::vector<std::string> make_environment(const command_spec& spec,
                                          const std::string& token_entry) {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv{*e};
    auto eq = kv.find('=');
    if (eq == std::string_view::npos)
      continue;
    auto key = kv.substr(0, eq);
    if (key == job_token_variable || spec.env.count(std::string{key}) != 0
        || !name_matches(key, spec.inherit_env))
      continue;
    out.emplace_back(kv);
  }
  for (const auto& [k, v] : spec.env)
    if (k != job_token_variable)
      out.push_back(k + '=' + v);
  out.push_back(token_entry);
  return out;
}

/// The value of PATH in an environment made by make_environment, or a
/// default system path when it has none.
std::string path_of(const std::vector<std::string>& env) {
  for (const auto& kv : env)
    if (kv.compare(0, 5, "PATH=") == 0)
      return kv.substr(5);
  return "/usr/local/bin:/usr/bin:/bin";
}

// -- finding a job's processes ------------------------------------------------

/// What /proc/<pid>/stat says about a process that matters here.
struct proc_stat {
  char state = 0;
  pid_t ppid = 0;
  pid_t pgrp = 0;
  unsigned long long flags = 0;
  /// Clock ticks after boot; with the pid it names one process for good.
  unsigned long long start_time = 0;

  bool dead() const noexcept { return state == 'Z' || state == 'X'; }
  bool kernel_thread() const noexcept { return (flags & 0x00200000) != 0; } // PF_KTHREAD
};

/// Reads a whole small file under /proc into `buf`; false when it cannot.
bool read_proc_file(const char* path, std::string& buf, std::size_t cap) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  buf.clear();
  char chunk[4096];
  for (;;) {
    ssize_t n = ::read(fd, chunk, sizeof(chunk));
    if (n > 0) {
      buf.append(chunk, static_cast<std::size_t>(n));
      if (buf.size() >= cap)
        break;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      ::close(fd);
      return false;
    }
    break;
  }
  ::close(fd);
  return true;
}

bool read_proc_stat(pid_t pid, proc_stat& out, std::string& buf) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
  if (!read_proc_file(path, buf, 4096))
    return false;
  // "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
  // majflt cmajflt utime stime cutime cstime priority nice threads
  // itrealvalue starttime ...": comm may hold anything, so start after ')'.
  auto close = buf.rfind(')');
  if (close == std::string::npos || close + 2 >= buf.size())
    return false;
  const char* p = buf.c_str() + close + 2;
  out.state = *p++;
  char* end = nullptr;
  unsigned long long fields[20] = {};
  for (int i = 0; i < 19; ++i) { // ppid (field 4) .. starttime (field 22)
    fields[i] = std::strtoull(p, &end, 10); // tpgid may be -1: wraps, unused
    if (end == p)
      return false;
    p = end;
  }
  out.ppid = static_cast<pid_t>(fields[0]);
  out.pgrp = static_cast<pid_t>(fields[1]);
  out.flags = fields[5];
  out.start_time = fields[18];
  return true;
}

/// Whether the environment block `env` ("K=V\0K=V\0...") holds `entry` as
/// a whole entry or, with `prefix`, an entry that starts with it.
bool environ_has(std::string_view env, std::string_view entry, bool prefix) {
  for (auto pos = env.find(entry); pos != std::string_view::npos;
       pos = env.find(entry, pos + 1)) {
    bool starts = pos == 0 || env[pos - 1] == '\0';
    auto after = pos + entry.size();
    bool ends = prefix || after == env.size() || env[after] == '\0';
    if (starts && ends)
      return true;
  }
  return false;
}

/// Clock ticks since boot, the unit of proc_stat::start_time.
unsigned long long boot_ticks_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  using ull = unsigned long long;
  static const ull hz = static_cast<ull>(std::max(::sysconf(_SC_CLK_TCK), 1L));
  return static_cast<ull>(ts.tv_sec) * hz + static_cast<ull>(ts.tv_nsec) / (1'000'000'000ULL / hz);
}

/// A process found on a scan.
struct proc_entry {
  enum class mark {
    group,  // in the process group
    token,  // carries the token
    zombie, // dead outside the group: its environment is gone, so only
            // its parent can tell whose it was
    unread, // alive, but its environment reads empty: a process in the
            // middle of execve() until the new image's is in place
  };
  pid_t pid = 0;
  proc_stat st;
  mark by = mark::token;
};

/// The processes of the machine as one round of the runner's loop sees them:
/// /proc is read once (each process's stat) and an environment when first
/// asked for, then kept. Every job stopped or drained in that round looks
/// here, so a round in which a thousand programs end scans /proc once, not a
/// thousand times.
class proc_table {
public:
  bool taken() const noexcept { return taken_; }

  /// Reads /proc now (every process but this one).
  void take() {
    clear();
    taken_ = true;
    DIR* dir = ::opendir("/proc");
    if (!dir)
      return;
    pid_t self = ::getpid();
    std::string buf;
    while (dirent* d = ::readdir(dir)) {
      if (d->d_name[0] < '1' || d->d_name[0] > '9')
        continue;
      char* end = nullptr;
      long pid = std::strtol(d->d_name, &end, 10);
      if (*end != '\0' || pid == self)
        continue;
      proc_stat st;
      if (read_proc_stat(static_cast<pid_t>(pid), st, buf))
        all_.emplace_back(static_cast<pid_t>(pid), st);
    }
    ::closedir(dir);
  }

  void clear() {
    taken_ = false;
    all_.clear();
    environ_.clear();
  }

  const std::vector<std::pair<pid_t, proc_stat>>& all() const noexcept { return all_; }

  /// The environment block of `pid`; nullptr when it cannot be read
  /// (another user's process refuses the read: it is not ours to stop).
  const std::string* environ_of(pid_t pid) {
    auto [it, fresh] = environ_.try_emplace(pid);
    if (fresh) {
      char path[64];
      std::snprintf(path, sizeof(path), "/proc/%d/environ", static_cast<int>(pid));
      std::string buf;
      bool readable = read_proc_file(path, buf, 8u << 20);
      if (readable)
        it->second = std::move(buf);
    }
    return it->second ? &*it->second : nullptr;
  }

private:
  bool taken_ = false;
  std::vector<std::pair<pid_t, proc_stat>> all_;
  std::unordered_map<pid_t, std::optional<std::string>> environ_;
};

/// The processes of `table` that are in process group `pgid` (when > 0) or
/// whose environment holds `entry` (see environ_has), the dead ones outside
/// the group (a dead process has no environment left; the caller tells by
/// its parent whether it was one of them) and the live ones whose
/// environment reads empty (mid-execve: the caller looks again later). Only processes started
/// at or after `since` (boot ticks, less a second of slack) are considered:
/// a job's processes cannot be older than the job. A process in one of
/// `other_groups` (other jobs' process groups) is not asked for its
/// environment: it is stopped with its own job's group.
std::vector<proc_entry> find_processes(proc_table& table, pid_t pgid, std::string_view entry,
                                       bool prefix, unsigned long long since,
                                       const std::unordered_set<pid_t>* other_groups = nullptr) {
  std::vector<proc_entry> out;
  if (!table.taken())
    table.take();
  static const unsigned long long slack = std::max(::sysconf(_SC_CLK_TCK), 1L);
  since = since > slack ? since - slack : 0;
  for (const auto& [pid, st] : table.all()) {
    if (st.start_time < since)
      continue;
    proc_entry e;
    e.pid = pid;
    e.st = st;
    if (pgid > 0 && st.pgrp == pgid) {
      e.by = proc_entry::mark::group;
      out.push_back(e);
      continue;
    }
    if (st.dead()) {
      e.by = proc_entry::mark::zombie;
      out.push_back(e);
      continue;
    }
    if (entry.empty() || st.kernel_thread())
      continue;
    if (other_groups != nullptr && other_groups->count(st.pgrp) != 0)
      continue;
    const auto* env = table.environ_of(pid);
    if (env == nullptr)
      continue;
    if (env->empty()) {
      e.by = proc_entry::mark::unread;
      out.push_back(e);
    } else if (environ_has(*env, entry, prefix)) {
      out.push_back(e);
    }
  }
  return out;
}

/// The zombie children of `parent` in `table`.
std::vector<proc_entry> zombie_children_of(proc_table& table, pid_t parent) {
  std::vector<proc_entry> out;
  if (!table.taken())
    table.take();
  for (const auto& [pid, st] : table.all())
    if (st.ppid == parent && st.dead())
      out.push_back({pid, st, proc_entry::mark::zombie});
  return out;
}

/// Reaps `pid` if it is a zombie child of this process; true when reaped.
bool reap_zombie(pid_t pid) noexcept {
  int status = 0;
  return ::waitpid(pid, &status, WNOHANG) == pid;
}

// -- runner-wide state --------------------------------------------------------

/// What every runner of this process shares: the pids of their own
/// children (so the orphan sweep of one never reaps another's) and how many
/// of them asked for this process to be a subreaper.
struct process_registry {
  std::mutex mtx;
  std::unordered_set<pid_t> children;
  int subreaper_users = 0;

  static process_registry& get() {
    static process_registry instance;
    return instance;
  }

  bool is_runner_child(pid_t pid) {
    std::lock_guard guard{mtx};
    return children.count(pid) != 0;
  }
};

/// A token prefix no other runner (of this process or any other) uses.
std::string make_runner_nonce() {
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%d-%08x%08x-%u", static_cast<int>(::getpid()), rd(),
                rd(), counter++);
  return buf;
}

} // namespace

const std::vector<std::string>& base_environment_names() {
  static const std::vector<std::string> names{
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR"};
  return names;
}

// -- state --------------------------------------------------------------------

struct command_runner::impl {
  using ending = command_result::ending;
  using proc_key = std::pair<pid_t, unsigned long long>; // pid, start time

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
    /// The program exited: it stays an unreaped zombie (so its process
    /// group id cannot be reused) while the rest of the job is killed.
    bool exited = false;
    /// Someone else reaped the program: its pid and group may be reused, so
    /// only the token finds the job's processes.
    bool lost = false;
    clock::time_point drain_deadline = clock::time_point::max();
    /// "SPOOL_JOB_TOKEN=<token>" as it appears in the job's environments.
    std::string token_entry;
    /// Boot ticks when the program was spawned.
    unsigned long long start_ticks = 0;
    /// Processes found by the token, remembered so that their zombies (which
    /// have no environment left) are still known as the job's.
    std::set<proc_key> marked;
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

  explicit impl(command_runner_options opts)
    : options(std::move(opts)), nonce(make_runner_nonce()) {
    wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0)
      throw std::system_error(errno, std::generic_category(),
                              "command_runner: eventfd");
    use_pidfd = options.use_pidfd;
    start_ticks = boot_ticks_now();
    if (options.adopt_orphans) {
      auto& reg = process_registry::get();
      std::lock_guard guard{reg.mtx};
      if (reg.subreaper_users > 0
          || ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0) {
        ++reg.subreaper_users;
        adopting = true;
      } else {
        spdlog::warn("command runner: cannot become a child subreaper ({}); "
                     "a stage program's descendants that leave their process "
                     "group are still killed through their job token but "
                     "reaped by init",
                     errno_text(errno));
      }
    }
  }

  ~impl() {
    close_fd(wake_fd);
    if (adopting) {
      auto& reg = process_registry::get();
      std::lock_guard guard{reg.mtx};
      if (--reg.subreaper_users == 0)
        ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    }
  }

  void wake() noexcept {
    uint64_t one = 1;
    // EAGAIN only when the counter is saturated: a wake-up is pending anyway.
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof(one));
  }

  // -- runner thread ----------------------------------------------------------

  void run();
  bool round();
  void hook(loop_point where) {
    if (options.loop_hook)
      options.loop_hook(where);
  }
  void take_in(pending_start p);
  std::unique_ptr<child> spawn(pending_start& p);
  std::size_t signal_job(child& c, int sig);
  void begin_stop(child& c, ending why, clock::time_point now);
  void on_timers(child& c, clock::time_point now);
  void write_stdin(child& c);
  bool read_pipe(child& c, int& fd, bool is_stdout, int max_reads);
  bool check_exit(child& c, clock::time_point now);
  bool drain(child& c, clock::time_point now);
  void reap_program(child& c);
  void finish(child& c);
  void complete(id which);
  void sweep_orphans();
  void deliver(std::function<void(command_result)>& on_done,
               command_result result);

  command_runner_options options;
  /// Prefix of this runner's job tokens: "<pid>-<random>-<n>".
  std::string nonce;
  unsigned long long start_ticks = 0;
  bool adopting = false; // this runner counts in subreaper_users
  int wake_fd = -1;
  std::atomic<id> next_id{1};
  std::atomic<std::size_t> running{0};

  std::mutex mtx;
  std::vector<pending_start> starts; // guarded by mtx
  std::vector<id> cancels;           // guarded by mtx
  bool stopping = false;             // guarded by mtx
  std::unordered_set<pid_t> groups;  // guarded by mtx: live process groups

  // Owned by the runner thread. Everything a round works on lives here, so
  // that a round cut short by an exception loses nothing.
  bool use_pidfd = true;
  std::deque<pending_start> intake;
  std::deque<id> cancel_intake;
  bool shutting_down = false;
  std::unordered_map<id, std::unique_ptr<child>> children;
  clock::time_point next_sweep = clock::now(); // due at once
  /// Unknown zombie children seen by the last orphan sweep.
  std::set<proc_key> zombies_seen;
  std::vector<pollfd> fds;
  /// /proc as this round sees it (taken when first needed), and the
  /// process groups of the jobs it knows.
  proc_table procs;
  std::unordered_set<pid_t> job_groups;

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
  c->token_entry = std::string{job_token_variable} + '=' + nonce + '.'
                   + std::to_string(p.which);
  auto env = make_environment(spec, c->token_entry);
  std::string error;
  int error_code = 0;
  std::string program = resolve_program(spec, path_of(env), error, error_code);
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
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = -1;
  c->start_ticks = boot_ticks_now();
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
  {
    auto& reg = process_registry::get();
    std::lock_guard guard{reg.mtx};
    reg.children.insert(pid);
  }
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

/// Sends `sig` to the job's process group and to every process outside it
/// that carries the job's token; reaps the job's zombies that are children
/// of this process (adopted ones). Returns how many of the job's processes,
/// the program itself aside, are not gone yet: alive, or dead with a parent
/// of the job that is itself about to hand them to us.
std::size_t command_runner::impl::signal_job(child& c, int sig) {
  using mark = proc_entry::mark;
  if (!c.lost)
    ::kill(-c.pid, sig); // the whole group at once
  pid_t self = ::getpid();
  if (!procs.taken()) {
    // The other jobs' groups, as this round's table sees them.
    job_groups.clear();
    for (const auto& [_, other] : children)
      if (!other->lost && other->pid > 0)
        job_groups.insert(other->pid);
  }
  job_groups.erase(c.pid);
  auto found = find_processes(procs, c.lost ? 0 : c.pid, c.token_entry, false, c.start_ticks,
                              &job_groups);
  if (!c.lost && c.pid > 0)
    job_groups.insert(c.pid);
  // The job: its group, its token's carriers and what was marked before
  // (found again by its stat: once dead, a process has no environment).
  std::unordered_set<pid_t> job;
  for (const auto& p : found)
    if (p.by != mark::zombie && p.by != mark::unread)
      job.insert(p.pid);
  std::string buf;
  for (auto i = c.marked.begin(); i != c.marked.end();) {
    proc_stat st;
    if (!read_proc_stat(i->first, st, buf) || st.start_time != i->second) {
      i = c.marked.erase(i); // gone
      continue;
    }
    job.insert(i->first);
    if (!st.dead())
      if (auto f = std::find_if(found.begin(), found.end(),
                                [&](const proc_entry& e) { return e.pid == i->first; });
          f == found.end())
        found.push_back({i->first, st, mark::token}); // lost its token: still ours
    ++i;
  }
  // A zombie outside the group is the job's when its parent is (zombies
  // have no children, so one step finds them all).
  for (const auto& p : found)
    if (p.by == mark::zombie && job.count(p.st.ppid) != 0)
      job.insert(p.pid);

  std::size_t pending = 0;
  for (const auto& p : found) {
    if (p.by == mark::unread) {
      // Mid-execve, its token unreadable for now: when the job or we (as
      // the subreaper of its orphans) are its parent, it may be the job's
      // escaped descendant. Look again next round rather than report the
      // job with it alive.
      if (p.st.ppid == self || job.count(p.st.ppid) != 0)
        ++pending;
      continue;
    }
    if (p.pid == c.pid || job.count(p.pid) == 0)
      continue; // the program (signalled with its group, reaped by us), or
                // a zombie of someone else's
    if (p.by != mark::group)
      c.marked.insert({p.pid, p.st.start_time});
    if (!p.st.dead()) {
      ++pending;
      if (p.by != mark::group)
        ::kill(p.pid, sig);
    } else if (p.st.ppid == self) {
      if (reap_zombie(p.pid))
        c.marked.erase({p.pid, p.st.start_time});
    } else if (job.count(p.st.ppid) != 0) {
      ++pending; // its parent, also the job's, dies and passes it on
    }
  }
  return pending;
}

void command_runner::impl::begin_stop(child& c, ending why,
                                      clock::time_point now) {
  if (c.stopping || c.exited)
    return;
  c.stopping = true;
  c.result.how = why;
  c.deadline = clock::time_point::max();
  if (c.grace <= milliseconds{0}) {
    signal_job(c, SIGKILL);
    return;
  }
  signal_job(c, SIGTERM);
  c.kill_at = now + c.grace;
}

void command_runner::impl::on_timers(child& c, clock::time_point now) {
  if (c.exited)
    return;
  if (now >= c.deadline)
    begin_stop(c, ending::timed_out, now);
  if (now >= c.kill_at) {
    signal_job(c, SIGKILL);
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

/// True once the program has exited. It is left unreaped (a zombie keeps
/// its process group id from being reused) until drain() has killed the
/// rest of its job.
bool command_runner::impl::check_exit(child& c, clock::time_point now) {
  siginfo_t info;
  std::memset(&info, 0, sizeof(info));
  int r = ::waitid(P_PID, static_cast<id_t>(c.pid), &info,
                   WEXITED | WNOHANG | WNOWAIT);
  if (r == 0 && info.si_pid == 0)
    return false; // still running
  if (r != 0 && errno == EINTR)
    return false;
  if (r != 0) {
    // ECHILD: someone else reaped it (SIGCHLD ignored, waitpid(-1) elsewhere).
    // The pid may be reused already: only the token is safe to use.
    spdlog::warn("command runner: pid {} was reaped elsewhere: {}", c.pid,
                 errno_text(errno));
    c.lost = true;
  }
  c.exited = true;
  c.kill_at = clock::time_point::max();
  c.drain_deadline = now + options.drain_limit;
  close_fd(c.pidfd); // readable for good now: stop polling it
  return true;
}

/// Kills what is left of an exited program's job; true once nothing of it
/// is alive (or drain_limit has passed).
bool command_runner::impl::drain(child& c, clock::time_point now) {
  auto alive = signal_job(c, SIGKILL);
  if (alive == 0)
    return true;
  if (now < c.drain_deadline)
    return false;
  spdlog::warn("command runner: {} process(es) of the job of pid {} still "
               "alive {} ms after SIGKILL; reporting the job anyway",
               alive, c.pid, options.drain_limit.count());
  return true;
}

void command_runner::impl::reap_program(child& c) {
  if (c.lost)
    return;
  int status = 0;
  pid_t w;
  do
    w = ::waitpid(c.pid, &status, 0); // a zombie already: does not block
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

/// Reaps, reports and forgets a drained child.
void command_runner::impl::complete(id which) {
  auto i = children.find(which);
  if (i == children.end())
    return;
  auto c = std::move(i->second);
  children.erase(i);
  try {
    reap_program(*c);
    {
      std::lock_guard guard{mtx};
      groups.erase(c->pid);
    }
    {
      auto& reg = process_registry::get();
      std::lock_guard guard{reg.mtx};
      reg.children.erase(c->pid);
    }
    finish(*c);
  } catch (const std::exception& e) {
    spdlog::error("command runner: finishing pid {}: {}", c->pid, e.what());
  }
  deliver(c->on_done, std::move(c->result));
}

/// Reaps adopted processes that exited by themselves: zombie children of
/// this process that no runner started and that stayed zombies since the
/// previous sweep (other code gets that long to reap its own children).
void command_runner::impl::sweep_orphans() {
  siginfo_t info;
  std::memset(&info, 0, sizeof(info));
  if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0
      || info.si_pid == 0) {
    zombies_seen.clear(); // no exited child at all: the common case
    return;
  }
  pid_t self = ::getpid();
  std::set<proc_key> seen;
  auto& reg = process_registry::get();
  for (const auto& p : zombie_children_of(procs, self)) {
    if (reg.is_runner_child(p.pid))
      continue;
    proc_key key{p.pid, p.st.start_time};
    if (zombies_seen.count(key) != 0) {
      if (reap_zombie(p.pid))
        spdlog::debug("command runner: reaped adopted process {}", p.pid);
    } else {
      seen.insert(key);
    }
  }
  zombies_seen.swap(seen);
}

void command_runner::impl::take_in(pending_start p) {
  std::unique_ptr<child> c;
  try {
    c = spawn(p);
  } catch (const std::exception& e) {
    command_result r;
    r.error = std::string{"spawning: "} + e.what();
    r.error_code = ENOMEM;
    deliver(p.on_done, std::move(r));
    return;
  }
  if (c->pid < 0) {
    deliver(p.on_done, std::move(c->result));
    return;
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

void command_runner::impl::run() {
  // Writes to a closed stdin raise SIGPIPE on this thread; keep it pending
  // (then consume it) instead of letting it kill the process.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);

  int failures = 0;
  for (;;) {
    try {
      if (!round())
        break;
      failures = 0;
      continue;
    } catch (const std::exception& e) {
      spdlog::error("command runner: a round of the loop failed, going on "
                    "with {} command(s): {}",
                    children.size(), e.what());
    } catch (...) {
      spdlog::error("command runner: a round of the loop failed with a "
                    "non-exception, going on with {} command(s)",
                    children.size());
    }
    // Everything a round works on is kept; a failure that repeats must not
    // spin: back off 1 ms, doubling up to 1 s.
    ++failures;
    std::this_thread::sleep_for(
      milliseconds{std::min(1000, 1 << std::min(failures - 1, 10))});
  }
}

/// One round of the loop: intake, poll, events, timers, completions.
/// False once the runner has shut down and nothing is left.
bool command_runner::impl::round() {
  procs.clear();
  // -- intake -----------------------------------------------------------------
  hook(loop_point::intake);
  bool stop;
  {
    std::lock_guard guard{mtx};
    for (auto& p : starts)
      intake.push_back(std::move(p));
    starts.clear();
    cancel_intake.insert(cancel_intake.end(), cancels.begin(), cancels.end());
    cancels.clear();
    stop = stopping;
  }
  while (!intake.empty()) {
    auto p = std::move(intake.front());
    intake.pop_front();
    if (stop) {
      command_result r;
      r.how = ending::cancelled;
      deliver(p.on_done, std::move(r));
      continue;
    }
    take_in(std::move(p));
  }
  auto now = clock::now();
  while (!cancel_intake.empty()) {
    if (auto i = children.find(cancel_intake.front()); i != children.end())
      begin_stop(*i->second, ending::cancelled, now);
    cancel_intake.pop_front();
  }
  if (stop && !shutting_down) {
    shutting_down = true;
    for (auto& [_, c] : children)
      begin_stop(*c, ending::cancelled, now);
  }
  if (shutting_down && children.empty()) {
    std::lock_guard guard{mtx};
    return !starts.empty(); // on_done callbacks may have started more
  }

  // -- poll -------------------------------------------------------------------
  enum class fd_role { in, out, err, pid };
  std::vector<std::pair<id, fd_role>> owners;
  fds.clear();
  fds.push_back({wake_fd, POLLIN, 0});
  owners.emplace_back(0, fd_role::pid);
  auto next_timer = clock::time_point::max();
  bool need_exit_poll = false;
  constexpr milliseconds drain_tick{20};
  for (auto& [which, cp] : children) {
    child& c = *cp;
    if (c.in_fd >= 0) {
      fds.push_back({c.in_fd, POLLOUT, 0});
      owners.emplace_back(which, fd_role::in);
    }
    if (c.out_fd >= 0) {
      fds.push_back({c.out_fd, POLLIN, 0});
      owners.emplace_back(which, fd_role::out);
    }
    if (c.err_fd >= 0) {
      fds.push_back({c.err_fd, POLLIN, 0});
      owners.emplace_back(which, fd_role::err);
    }
    if (c.exited) {
      next_timer = std::min(next_timer, now + drain_tick);
      continue;
    }
    if (c.pidfd >= 0) {
      fds.push_back({c.pidfd, POLLIN, 0});
      owners.emplace_back(which, fd_role::pid);
    } else {
      need_exit_poll = true;
    }
    next_timer = std::min({next_timer, c.deadline, c.kill_at});
  }
  if (adopting)
    next_timer = std::min(next_timer, next_sweep);
  int timeout_ms = -1;
  if (next_timer != clock::time_point::max()) {
    auto at = clock::now();
    auto left = next_timer > at ? next_timer - at : clock::duration::zero();
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

  // -- events -----------------------------------------------------------------
  hook(loop_point::events);
  now = clock::now();
  for (std::size_t i = 0; n > 0 && i < fds.size(); ++i) {
    if (fds[i].revents == 0)
      continue;
    auto [which, role] = owners[i];
    if (which == 0) {
      uint64_t count;
      [[maybe_unused]] auto r = ::read(wake_fd, &count, sizeof(count));
      continue;
    }
    auto it = children.find(which);
    if (it == children.end())
      continue;
    child& c = *it->second;
    switch (role) {
      case fd_role::in:
        write_stdin(c);
        break;
      case fd_role::out:
        read_pipe(c, c.out_fd, true, reads_per_round);
        break;
      case fd_role::err:
        read_pipe(c, c.err_fd, false, reads_per_round);
        break;
      case fd_role::pid:
        if (!c.exited)
          check_exit(c, now);
        break;
    }
  }
  now = clock::now();
  for (auto& [which, cp] : children) {
    child& c = *cp;
    if (!c.exited && c.pidfd < 0)
      check_exit(c, now);
    on_timers(c, now);
  }

  // -- completions ------------------------------------------------------------
  hook(loop_point::completions);
  std::vector<id> drained;
  for (auto& [which, cp] : children)
    if (cp->exited && drain(*cp, now))
      drained.push_back(which);
  for (auto which : drained)
    complete(which);
  if (adopting && now >= next_sweep) {
    next_sweep = now + std::max(options.orphan_sweep_interval, milliseconds{1});
    sweep_orphans();
  }
  return true;
}

// -- public API ---------------------------------------------------------------

command_runner::command_runner() : command_runner(command_runner_options{}) {
}

command_runner::command_runner(command_runner_options options)
  : impl_(std::make_unique<impl>(std::move(options))) {
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
  try {
    std::lock_guard guard{impl_->mtx};
    for (auto pgid : impl_->groups)
      ::kill(-pgid, SIGKILL);
    std::string prefix = std::string{job_token_variable} + '=' + impl_->nonce + '.';
    // One pass: the process is about to exit, and must not wait for one
    // caught mid-execve (its token unreadable for a moment) to show it.
    proc_table table;
    for (const auto& p : find_processes(table, 0, prefix, true, impl_->start_ticks))
      if (p.by != proc_entry::mark::unread && !p.st.dead())
        ::kill(p.pid, SIGKILL);
  } catch (...) {
    // Out of memory while scanning: the groups at least are gone.
  }
}

std::size_t command_runner::running() const {
  return impl_->running.load();
}

} // namespace spool::exec
