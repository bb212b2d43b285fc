#pragma once
// The spool command line: each file in runtime/cli/ registers a group of
// subcommands on the CLI11 app. A subcommand's callback stores the action to
// run; main() runs it after parsing, with errors turned into one clear line.

#include <functional>
#include <string>

namespace CLI {
class App;
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

} // namespace spool::cli
