// spool: the one binary. Subcommands are registered by runtime/cli/*.cpp.

#include "runtime/cli/commands.hpp"
#include "runtime/logging.hpp"
#include "runtime/store/task_input.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <iostream>

int main(int argc, char** argv) {
  using namespace spool;
  CLI::App app{"Spool: a durable, rate-limit-aware runtime for media-generation "
               "pipelines on PostgreSQL",
               "spool"};
  app.require_subcommand(1);
  cli::context ctx;
  app.add_option("--log-level", ctx.log_level,
                 "trace, debug, info, warn, error, critical or off")
    ->capture_default_str();
  app.add_option("--log-format", ctx.log_format, "text or json (one object a line)")
    ->capture_default_str();
  cli::add_db_commands(app, ctx);
  cli::add_migrate_commands(app, ctx);
  cli::add_config_commands(app, ctx);
  cli::add_queue_commands(app, ctx);
  cli::add_run_commands(app, ctx);
  cli::add_demo_command(app, ctx);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::ParseError& e) {
    // Name an unknown subcommand: CLI11 only says one is required.
    std::string unknown;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--log-level" || a == "--log-format") {
        ++i;
        continue;
      }
      if (a.rfind("-", 0) == 0)
        continue;
      bool known = false;
      for (auto* s : app.get_subcommands({}))
        known = known || s->check_name(a);
      if (!known)
        unknown = a;
      break;
    }
    if (!unknown.empty())
      std::cerr << "spool: unknown subcommand '" << unknown << "'\n";
    else
      std::cerr << "spool: " << e.what() << "\n";
    // Usage of the subcommand the error is about, when there is one.
    const CLI::App* sub = &app;
    for (auto* s : app.get_subcommands())
      for (sub = s; !sub->get_subcommands().empty();)
        sub = sub->get_subcommands().front();
    std::cerr << sub->help();
    return 2;
  }
  try {
    setup_logging(ctx.log_level, ctx.log_format);
    return ctx.action ? ctx.action() : 0;
  } catch (const std::invalid_argument& e) {
    std::cerr << "spool: " << e.what() << "\n";
    return 2;
  } catch (const store::input_error& e) {
    std::cerr << "spool: rejected, nothing was enqueued:\n" << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    // pg::error (with the redacted URL or SQLSTATE), migration_error, ...:
    // one clear line.
    std::cerr << "spool: " << e.what() << "\n";
    return 1;
  }
}
