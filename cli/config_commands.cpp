// spool config check FILE, and loading configs for the other commands.

#include "cli/commands.hpp"
#include "runtime/config/config.hpp"
#include "runtime/local_db.hpp"

#include <filesystem>
#include <iostream>
#include <stdexcept>

namespace spool::cli {

std::string resolve_config_path(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::exists(path) || fs::path{path}.is_absolute())
    return path;
  auto in_home = spool_home() / path; // e.g. config/spool.json from anywhere
  return fs::exists(in_home) ? in_home.string() : path;
}

std::shared_ptr<const config::snapshot> load_config(const std::string& path) {
  auto resolved = resolve_config_path(path);
  auto res = config::load_file(resolved);
  if (!res.ok()) {
    std::string msg = "invalid configuration " + resolved + ":";
    for (auto& p : res.problems)
      msg += "\n  " + config::to_string(p);
    throw std::invalid_argument(msg);
  }
  return res.config;
}

std::vector<store::pipeline_stage> pipeline_of(const config::snapshot& cfg) {
  std::vector<store::pipeline_stage> out;
  for (auto& s : cfg.stages)
    out.push_back({s.name, s.after, s.optional, s.retry.max_retries, s.retry.max_lost_leases});
  return out;
}

int config_check(const std::string& file) {
  auto path = resolve_config_path(file);
  auto res = config::load_file(path);
  if (!res.ok()) {
    for (auto& p : res.problems)
      std::cout << config::to_string(p) << "\n";
    std::cout << path << ": " << res.problems.size() << " problem(s)\n";
    return 1;
  }
  std::cout << path << ": ok (" << res.config->stages.size() << " stages, version "
            << res.config->version << ")\n";
  return 0;
}

} // namespace spool::cli
