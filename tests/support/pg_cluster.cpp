#include "tests/support/pg_cluster.hpp"

#include "runtime/local_db.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

namespace fs = std::filesystem;

namespace spool::test {

namespace {

fs::path pg_bindir() {
  if (const char* b = std::getenv("SPOOL_PG_BINDIR"); b != nullptr && *b != '\0')
    return b;
  return "/usr/lib/postgresql/15/bin";
}

/// Runs `argv` to completion, as the cluster's owner when we are root (the
/// same account local_cluster uses), in a session of its own so that the
/// server it starts outlives it. Output goes to /dev/null: the server writes
/// its log to the file given with -l. Returns the exit code.
int run_as_owner(const std::vector<std::string>& argv) {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;
  bool switch_user = ::geteuid() == 0;
  if (switch_user) {
    const char* n = std::getenv("SPOOL_PG_USER");
    name = n != nullptr && *n != '\0' ? n : "postgres";
    auto pw = ::getpwnam(name.c_str());
    if (pw == nullptr)
      throw std::runtime_error("no user '" + name + "' to run PostgreSQL as");
    uid = pw->pw_uid;
    gid = pw->pw_gid;
  }
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error(std::string{"fork failed: "} + std::strerror(errno));
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDWR);
    ::dup2(devnull, 0);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    if (switch_user
        && (::initgroups(name.c_str(), gid) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0))
      ::_exit(126);
    ::setsid();
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// The state letter and parent pid of `pid` from /proc/<pid>/stat; state
/// '?' when the process is gone.
std::pair<char, int> proc_stat(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string stat;
  std::getline(in, stat);
  // pid (comm) state ppid ...; comm may contain spaces and parentheses.
  auto close = stat.rfind(')');
  if (close == std::string::npos)
    return {'?', -1};
  std::istringstream rest{stat.substr(close + 1)};
  char state = '?';
  int ppid = -1;
  rest >> state >> ppid;
  return {state, ppid};
}

} // namespace

pg_cluster::pg_cluster() {
  char tmpl[] = "/tmp/spool_pgXXXXXX";
  if (::mkdtemp(tmpl) == nullptr)
    throw std::runtime_error(std::string{"mkdtemp failed: "} + std::strerror(errno));
  home_ = tmpl;
  // The server's user must reach the data directory inside.
  ::chmod(home_.c_str(), 0755);
  cluster_ = std::make_unique<local_cluster>(home_);
  try {
    cluster_->start();
  } catch (...) {
    std::error_code ec;
    try {
      cluster_->destroy();
    } catch (...) {
    }
    fs::remove_all(home_, ec);
    throw;
  }
}

pg_cluster::~pg_cluster() {
  try {
    if (paused_)
      resume();
  } catch (...) {
  }
  try {
    cluster_->destroy();
  } catch (...) {
    // A server that will not stop in fast mode is killed outright.
    if (int pm = postmaster_pid(); pm > 0)
      ::kill(pm, SIGQUIT);
  }
  std::error_code ec;
  fs::remove_all(home_, ec);
}

std::string pg_cluster::url() const {
  return cluster_->url();
}

void pg_cluster::pg_ctl(const std::string& action, const std::vector<std::string>& args) {
  auto dir = fs::canonical(cluster_->data_dir());
  std::vector<std::string> argv{(pg_bindir() / "pg_ctl").string(), action, "-D", dir.string(),
                                "-w", "-t", "120"};
  argv.insert(argv.end(), args.begin(), args.end());
  if (action != "stop") {
    argv.push_back("-l");
    argv.push_back((dir / "server.log").string());
  }
  int rc = run_as_owner(argv);
  if (rc != 0)
    throw std::runtime_error("pg_ctl " + action + " failed (exit " + std::to_string(rc)
                             + "): " + log_tail(10));
}

void pg_cluster::restart(const std::string& mode) {
  pg_ctl("restart", {"-m", mode});
}

void pg_cluster::stop() {
  pg_ctl("stop", {"-m", "fast"});
}

void pg_cluster::start() {
  pg_ctl("start", {});
}

int pg_cluster::postmaster_pid() const {
  std::error_code ec;
  auto dir = fs::canonical(cluster_->data_dir(), ec);
  if (ec)
    return -1;
  std::ifstream in{dir / "postmaster.pid"};
  int pid = -1;
  in >> pid;
  return in ? pid : -1;
}

std::vector<int> pg_cluster::server_pids() const {
  std::vector<int> pids;
  int pm = postmaster_pid();
  if (pm <= 0 || ::kill(pm, 0) != 0)
    return pids;
  pids.push_back(pm);
  std::error_code ec;
  for (auto& entry : fs::directory_iterator{"/proc", ec}) {
    auto name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    int pid = std::atoi(name.c_str());
    if (proc_stat(pid).second == pm)
      pids.push_back(pid);
  }
  return pids;
}

void pg_cluster::pause() {
  // The postmaster first, so that it forks nothing new; then its children,
  // listed again until no running one is left.
  int pm = postmaster_pid();
  if (pm <= 0)
    throw std::runtime_error("cannot pause: the server is not running");
  ::kill(pm, SIGSTOP);
  paused_ = true;
  // Signals are delivered asynchronously: wait until every process is seen
  // stopped ('T'), dead ('Z') or gone.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  for (;;) {
    bool all_stopped = true;
    for (int pid : server_pids()) {
      ::kill(pid, SIGSTOP);
      auto state = proc_stat(pid).first;
      // A backend that exited just before stays a zombie ('Z') until the
      // (stopped) postmaster reaps it: it answers nothing either.
      all_stopped = all_stopped && (state == 'T' || state == 'Z' || state == 'X' || state == '?');
    }
    if (all_stopped)
      return;
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("pausing PostgreSQL: some server processes did not stop");
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
}

void pg_cluster::resume() {
  auto pids = server_pids();
  // Children first: the postmaster wakes up to a consistent set of them.
  for (auto it = pids.rbegin(); it != pids.rend(); ++it)
    ::kill(*it, SIGCONT);
  paused_ = false;
}

std::string pg_cluster::log_tail(std::size_t lines) const {
  std::error_code ec;
  auto dir = fs::canonical(cluster_->data_dir(), ec);
  std::ifstream in{dir / "server.log"};
  std::deque<std::string> tail;
  for (std::string line; std::getline(in, line);) {
    tail.push_back(line);
    if (tail.size() > lines)
      tail.pop_front();
  }
  std::string out;
  for (auto& l : tail)
    out += l + "\n";
  return out;
}

} // namespace spool::test
