#include "runtime/local_db.hpp"

#include <spdlog/spdlog.h>

#include "runtime/pg/connection.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace fs = std::filesystem;

namespace spool {

namespace {

constexpr const char* owner_env = "SPOOL_PG_USER"; // default: postgres

struct file_lock {
  int fd;
  explicit file_lock(const fs::path& p) {
    fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0)
      throw std::runtime_error("cannot lock " + p.string() + ": " + std::strerror(errno));
  }
  ~file_lock() {
    ::flock(fd, LOCK_UN);
    ::close(fd);
  }
};

struct account {
  std::string name;
  uid_t uid;
  gid_t gid;
};

std::optional<account> owner_account() {
  if (::geteuid() != 0)
    return std::nullopt; // not root: run as ourselves
  const char* name = std::getenv(owner_env);
  if (name == nullptr || *name == '\0')
    name = "postgres";
  auto pw = ::getpwnam(name);
  if (pw == nullptr)
    throw std::runtime_error(std::string{"running as root, but the unprivileged user '"}
                             + name + "' for PostgreSQL does not exist (set "
                             + owner_env + " or install postgresql-15)");
  return account{pw->pw_name, pw->pw_uid, pw->pw_gid};
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0
      || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0)
      ::close(fd);
    throw std::runtime_error(std::string{"cannot find a free port: "} + std::strerror(errno));
  }
  int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

bool port_in_use(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool in_use = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return in_use;
}

std::string read_file(const fs::path& p) {
  std::ifstream in{p};
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

/// Whether `user` can reach into `dir` (every parent searchable), checked
/// with the user's ids. The cluster directory itself is created and handed
/// over to the user by us.
bool accessible_by(const account& pw, const fs::path& dir) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgid(pw.gid) != 0 || ::setuid(pw.uid) != 0)
      ::_exit(2);
    ::_exit(::access(dir.c_str(), X_OK) == 0 ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

} // namespace

fs::path spool_home() {
  if (const char* h = std::getenv("SPOOL_HOME"); h != nullptr && *h != '\0')
    return fs::absolute(h);
  return fs::path{SPOOL_SOURCE_DIR};
}

local_cluster::local_cluster(fs::path home)
  : state_dir_(home / ".spool"), data_dir_(state_dir_ / "pg") {
  if (const char* b = std::getenv("SPOOL_PG_BINDIR"); b != nullptr && *b != '\0')
    bindir_ = b;
  else
    bindir_ = "/usr/lib/postgresql/15/bin";
}

int local_cluster::run(const std::vector<std::string>& argv, bool as_owner,
                       std::string* output) const {
  auto owner = as_owner ? owner_account() : std::nullopt;
  int pipefd[2] = {-1, -1};
  if (output && ::pipe2(pipefd, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe failed");
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error(std::string{"fork failed: "} + std::strerror(errno));
  if (pid == 0) {
    if (output) {
      ::dup2(pipefd[1], 1);
      ::dup2(pipefd[1], 2);
    } else {
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 1);
    }
    if (owner) {
      if (::initgroups(owner->name.c_str(), owner->gid) != 0
          || ::setgid(owner->gid) != 0 || ::setuid(owner->uid) != 0)
        ::_exit(126);
    }
    // The server must outlive this command: its own session, no signals
    // from our terminal.
    ::setsid();
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  if (output) {
    ::close(pipefd[1]);
    std::array<char, 4096> buf;
    ssize_t n;
    while ((n = ::read(pipefd[0], buf.data(), buf.size())) > 0)
      output->append(buf.data(), static_cast<size_t>(n));
    ::close(pipefd[0]);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
    throw std::runtime_error("cannot run " + argv[0]
                             + ": not found (install postgresql-15, or set "
                               "SPOOL_PG_BINDIR)");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::optional<int> local_cluster::port() const {
  auto conf = read_file(data_dir_ / "spool.conf");
  auto pos = conf.find("port = ");
  if (pos == std::string::npos)
    return std::nullopt;
  return std::atoi(conf.c_str() + pos + 7);
}

void local_cluster::init_cluster() {
  auto owner = owner_account();
  fs::create_directories(state_dir_);
  if (owner && !accessible_by(*owner, state_dir_)) {
    // The working copy lives where the server's user cannot reach (e.g. under
    // /root): keep the cluster in /var/lib/spool and link it from here.
    auto real = fs::path{"/var/lib/spool"}
                / ("pg-" + std::to_string(std::hash<std::string>{}(state_dir_.string())));
    fs::create_directories(real);
    if (!fs::exists(data_dir_))
      fs::create_symlink(real, data_dir_);
    spdlog::info("cluster data lives in {} ({} cannot be read by user {})",
                 real.string(), state_dir_.string(), owner->name);
  } else {
    fs::create_directories(data_dir_);
  }
  auto real_dir = fs::canonical(data_dir_);
  ::chmod(real_dir.c_str(), 0700);
  if (owner && ::chown(real_dir.c_str(), owner->uid, owner->gid) != 0)
    throw std::runtime_error("cannot chown " + real_dir.string() + ": " + std::strerror(errno));
  std::string out;
  int rc = run({(bindir_ / "initdb").string(), "-D", real_dir.string(), "-U", "spool",
                "--auth=trust", "-E", "UTF8", "--no-locale"},
               true, &out);
  if (rc != 0)
    throw std::runtime_error("initdb failed (exit " + std::to_string(rc) + "): " + out);
  std::ofstream conf{real_dir / "postgresql.conf", std::ios::app};
  conf << "\n# added by spool\ninclude_if_exists = 'spool.conf'\n";
}

void local_cluster::ensure_port_free() {
  auto p = port();
  if (p && !port_in_use(*p))
    return;
  auto real_dir = fs::canonical(data_dir_);
  std::ofstream conf{real_dir / "spool.conf", std::ios::trunc};
  // Loopback only; no unix socket (its path length is limited and its
  // default directory may not be writable).
  conf << "listen_addresses = '127.0.0.1'\n"
       << "port = " << free_port() << "\n"
       << "unix_socket_directories = ''\n"
       << "max_connections = 300\n"
       << "shared_buffers = 256MB\n"
       << "fsync = on\n";
  conf.close();
  if (auto owner = owner_account())
    if (::chown((real_dir / "spool.conf").c_str(), owner->uid, owner->gid) != 0)
      throw std::runtime_error("cannot chown spool.conf");
}

bool local_cluster::running() const {
  if (!fs::exists(data_dir_ / "PG_VERSION"))
    return false;
  auto pg_ctl = (bindir_ / "pg_ctl").string();
  return run({pg_ctl, "status", "-D", fs::canonical(data_dir_).string()}, true) == 0;
}

void local_cluster::start() {
  fs::create_directories(state_dir_);
  file_lock lock{state_dir_ / "pg.lock"};
  if (!fs::exists(data_dir_ / "PG_VERSION"))
    init_cluster();
  if (!running()) {
    ensure_port_free();
    auto real_dir = fs::canonical(data_dir_);
    std::string out;
    int rc = run({(bindir_ / "pg_ctl").string(), "start", "-D", real_dir.string(), "-w",
                  "-t", "120", "-l", (real_dir / "server.log").string()},
                 true, &out);
    if (rc != 0)
      throw std::runtime_error("starting PostgreSQL failed (exit " + std::to_string(rc)
                               + "); see " + (real_dir / "server.log").string() + ": " + out);
  }
  pg::connection admin{url_for("postgres")};
  auto res = admin.query("SELECT 1 FROM pg_database WHERE datname = 'spool'");
  if (res.rows() == 0) {
    try {
      admin.exec("CREATE DATABASE spool");
    } catch (const pg::error& e) {
      if (e.sqlstate() != "42P04") // created concurrently
        throw;
    }
  }
}

void local_cluster::stop() {
  if (!running())
    return;
  auto real_dir = fs::canonical(data_dir_);
  int rc = run({(bindir_ / "pg_ctl").string(), "stop", "-D", real_dir.string(), "-m",
                "fast", "-w"},
               true);
  if (rc != 0)
    throw std::runtime_error("stopping PostgreSQL failed (exit " + std::to_string(rc) + ")");
}

void local_cluster::destroy() {
  stop();
  std::error_code ec;
  if (fs::is_symlink(data_dir_, ec))
    fs::remove_all(fs::canonical(data_dir_, ec), ec);
  fs::remove_all(state_dir_, ec);
}

std::string local_cluster::url_for(const std::string& dbname) const {
  auto p = port();
  if (!p)
    throw std::runtime_error("the local cluster under " + data_dir_.string()
                             + " is not set up; run `spool db start`");
  return "postgresql://spool@127.0.0.1:" + std::to_string(*p) + "/" + dbname;
}

std::string local_cluster::url() const {
  return url_for("spool");
}

std::string resolve_database_url() {
  if (const char* u = std::getenv("SPOOL_DATABASE_URL"); u != nullptr && *u != '\0')
    return u;
  local_cluster cluster;
  cluster.start();
  return cluster.url();
}

} // namespace spool
