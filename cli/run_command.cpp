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
  auto cfg = load_config(o.config);
  actors::worker_options wo;
  wo.database_url = database_url(g, cfg.get());
  wo.data_dir = data_dir_for(*cfg);
  wo.exit_when_idle = o.exit_when_idle;
  return actors::run_worker(cfg, wo);
}

} // namespace spool::cli
