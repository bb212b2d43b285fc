#pragma once
// `spool run`: one worker process. No CAF in this header.

#include "runtime/config/config.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace spool::actors {

struct worker_options {
  std::string database_url;
  /// Absolute; stage programs write under it.
  std::string data_dir;
  bool exit_when_idle = false;
  /// Where the configuration comes from and is re-read on a change: an
  /// absolute file path (re-read on SIGHUP and when the file changes), or
  /// "db" (the newest version stored by `spool config push`, re-read on its
  /// NOTIFY and on SIGHUP). Empty: the configuration never changes.
  std::string config_source;
  /// File source: apply changes of the file as they are saved (inotify);
  /// without, only SIGHUP re-reads it.
  bool watch_config = true;
  /// The stored version the initial configuration came from (db only).
  int64_t config_stored_version = 0;
  /// Overrides of the configuration's http.listen and http.cluster_metrics
  /// (--http, --cluster-metrics).
  std::optional<std::string> http_listen;
  std::optional<bool> cluster_metrics;
};

/// Runs the worker until it drains (SIGTERM/SIGINT, or idle with
/// exit_when_idle). Returns the process exit code: 0 after a clean drain.
/// A second signal exits at once (its leases expire and are rescued).
int run_worker(std::shared_ptr<const config::snapshot> config, const worker_options& opts);

/// host:pid:random, unique per process.
std::string make_worker_id();

} // namespace spool::actors
