#pragma once
// A PostgreSQL cluster of a test's own, for tests that restart, crash or
// freeze the server: initialized into a temporary directory, listening on a
// free loopback port, run as the `postgres` user (or $SPOOL_PG_USER) when the
// test runs as root. Built on the managed cluster (runtime/local_db.hpp), so
// it is set up exactly as `spool db start` sets one up. Restarting or pausing
// it disturbs no other test. Stopped and deleted on destruction, also when the
// test failed (a paused server is resumed first).

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace spool {
class local_cluster;
}

namespace spool::test {

class pg_cluster {
public:
  /// Initializes and starts the cluster; its `spool` database exists (empty,
  /// not migrated). Throws when PostgreSQL cannot be started.
  pg_cluster();
  ~pg_cluster();
  pg_cluster(const pg_cluster&) = delete;
  pg_cluster& operator=(const pg_cluster&) = delete;

  /// libpq URL of the `spool` database.
  std::string url() const;
  /// A scratch directory that is deleted with the cluster.
  const std::filesystem::path& scratch_dir() const noexcept { return home_; }

  /// `pg_ctl restart -m <mode> -w`: "fast" (sessions are terminated, a
  /// checkpoint is written) or "immediate" (every server process is killed;
  /// the next start runs crash recovery). Returns once the server accepts
  /// connections again; throws when it does not.
  void restart(const std::string& mode);

  /// `pg_ctl stop -m fast -w`: the server is gone (connections are refused)
  /// until start().
  void stop();
  void start();

  /// Freezes every process of the cluster (SIGSTOP): connections stay open,
  /// nothing answers. resume() (SIGCONT) undoes it.
  void pause();
  void resume();
  bool paused() const noexcept { return paused_; }

  /// The postmaster and every process it forked (backends and auxiliary
  /// processes); empty when the server is not running.
  std::vector<int> server_pids() const;

  /// The last `lines` lines of the server's log.
  std::string log_tail(std::size_t lines = 30) const;

private:
  int postmaster_pid() const;
  /// `pg_ctl ACTION -D <data> -w ARGS...` as the cluster's owner; throws
  /// with the server log's tail when it fails.
  void pg_ctl(const std::string& action, const std::vector<std::string>& args);

  std::filesystem::path home_;
  std::unique_ptr<local_cluster> cluster_;
  bool paused_ = false;
};

} // namespace spool::test
