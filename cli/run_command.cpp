// spool run: the worker.

#include "actors/worker.hpp"
#include "cli/commands.hpp"

#include <filesystem>

namespace spool::cli {

std::string data_dir_for(const config::snapshot& cfg) {
  std::filesystem::path p{cfg.data_dir};
  if (p.is_relative())
    p = std::filesystem::current_path() / p;
  std::filesystem::create_directories(p);
  return p.lexically_normal().string();
}

int run(const global_options& g, const run_options& o) {
  auto loaded = load_config_source(g, o.config);
  actors::worker_options wo;
  wo.database_url = database_url(g, loaded.config.get());
  wo.data_dir = data_dir_for(*loaded.config);
  wo.exit_when_idle = o.exit_when_idle;
  wo.config_source = loaded.source;
  wo.watch_config = o.watch;
  wo.config_stored_version = loaded.stored_version;
  return actors::run_worker(loaded.config, wo);
}

} // namespace spool::cli
