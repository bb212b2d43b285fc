#pragma once
// The managed local PostgreSQL cluster for development, demos and tests:
// a PostgreSQL 15 cluster under <home>/.spool/pg, listening on loopback only,
// on a free port, run as an unprivileged OS user when the caller is root.

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace spool {

/// The working copy Spool keeps its local state under: $SPOOL_HOME when set,
/// else the source tree the binary was built from.
std::filesystem::path spool_home();

class local_cluster {
public:
  /// Uses <home>/.spool; binaries from $SPOOL_PG_BINDIR, else PostgreSQL 15's.
  explicit local_cluster(std::filesystem::path home = spool_home());

  /// Initializes the cluster when needed, starts it unless running, creates
  /// the `spool` database. Idempotent and safe to call from several processes.
  void start();
  void stop();
  /// Stops the cluster and deletes its files (tests use throwaway clusters).
  void destroy();
  bool running() const;
  /// libpq URL of the `spool` database (valid once started).
  std::string url() const;
  /// URL of another database on the same cluster.
  std::string url_for(const std::string& dbname) const;
  const std::filesystem::path& data_dir() const noexcept { return data_dir_; }
  std::optional<int> port() const;

private:
  int run(const std::vector<std::string>& argv, bool as_owner,
          std::string* output = nullptr) const;
  void init_cluster();
  void ensure_port_free();

  std::filesystem::path state_dir_; // <home>/.spool
  std::filesystem::path data_dir_;  // <home>/.spool/pg
  std::filesystem::path bindir_;
};

/// The database URL every subcommand uses: $SPOOL_DATABASE_URL when set,
/// else the managed cluster's, which is started on demand.
std::string resolve_database_url();

} // namespace spool
