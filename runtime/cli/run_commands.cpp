// spool run: the worker.

#include "actors/worker.hpp"
#include "runtime/cli/commands.hpp"
#include "runtime/local_db.hpp"

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <filesystem>

namespace spool::cli {

std::string database_url_for(const config::snapshot& cfg) {
  auto url = config::effective_database_url(cfg, std::getenv("SPOOL_DATABASE_URL"));
  return url.empty() ? resolve_database_url() : url;
}

std::string data_dir_for(const config::snapshot& cfg) {
  std::filesystem::path p{cfg.data_dir};
  if (p.is_relative())
    p = std::filesystem::current_path() / p;
  std::filesystem::create_directories(p);
  return p.lexically_normal().string();
}

void add_run_commands(CLI::App& app, context& ctx) {
  struct options {
    std::string config = "config/spool.json";
    bool exit_when_idle = false;
  };
  auto o = std::make_shared<options>();
  auto run = app.add_subcommand("run", "Run a worker: claim and execute stage runs");
  run->add_option("--config", o->config, "Pipeline and worker config")->capture_default_str();
  run->add_flag("--exit-when-idle", o->exit_when_idle,
                "Exit 0 once no work is ready, running or waiting on a retry");
  run->callback([&ctx, o] {
    ctx.action = [o] {
      auto cfg = load_config(o->config);
      actors::worker_options wo;
      wo.database_url = database_url_for(*cfg);
      wo.data_dir = data_dir_for(*cfg);
      wo.exit_when_idle = o->exit_when_idle;
      return actors::run_worker(cfg, wo);
    };
  });
}

} // namespace spool::cli
