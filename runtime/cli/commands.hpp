#pragma once
// The spool command line: each file in runtime/cli/ registers a group of
// subcommands on the CLI11 app. A subcommand's callback stores the action to
// run; main() runs it after parsing, with errors turned into one clear line.

#include "runtime/store/store.hpp"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace spool::config {
struct snapshot;
}

namespace spool::cli {

struct context {
  std::string log_level = "info";
  std::string log_format = "text";
  /// What the chosen subcommand does; returns the exit code.
  std::function<int()> action;
};

void add_db_commands(CLI::App& app, context& ctx);
void add_migrate_commands(CLI::App& app, context& ctx);
void add_config_commands(CLI::App& app, context& ctx);
void add_queue_commands(CLI::App& app, context& ctx);
void add_run_commands(CLI::App& app, context& ctx);
void add_demo_command(CLI::App& app, context& ctx);

/// $SPOOL_DATABASE_URL, else the config's database_url, else the managed
/// local cluster (started on demand).
std::string database_url_for(const config::snapshot& cfg);
/// The config's data_dir made absolute (against the working directory) and
/// created.
std::string data_dir_for(const config::snapshot& cfg);

/// `path` as given when it exists, else relative to the Spool home (so the
/// shipped config/spool.json is found from any directory).
std::string resolve_config_path(const std::string& path);
/// Loads and validates a config file; throws std::invalid_argument listing
/// every problem as "path: message".
std::shared_ptr<const config::snapshot> load_config(const std::string& path);
/// The queue's view of the configured pipeline.
std::vector<store::pipeline_stage> pipeline_of(const config::snapshot& cfg);

} // namespace spool::cli
