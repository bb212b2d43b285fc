#pragma once
// `spool run`: one worker process. No CAF in this header.

#include "runtime/config/config.hpp"

#include <memory>
#include <string>

namespace spool::actors {

struct worker_options {
  std::string database_url;
  /// Absolute; stage programs write under it.
  std::string data_dir;
  bool exit_when_idle = false;
};

/// Runs the worker until it drains (SIGTERM/SIGINT, or idle with
/// exit_when_idle). Returns the process exit code: 0 after a clean drain.
/// A second signal exits at once (its leases expire and are rescued).
int run_worker(std::shared_ptr<const config::snapshot> config, const worker_options& opts);

/// host:pid:random, unique per process.
std::string make_worker_id();

} // namespace spool::actors
