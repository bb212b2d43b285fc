// spool config check FILE: validate a whole configuration file.

#include "runtime/cli/commands.hpp"
#include "runtime/config/config.hpp"
#include "runtime/local_db.hpp"

#include <CLI/CLI.hpp>

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

void add_config_commands(CLI::App& app, context& ctx) {
  auto cfg = app.add_subcommand("config", "Validate configuration files");
  cfg->require_subcommand(1);
  auto check = cfg->add_subcommand("check", "Validate a whole config file; print every problem");
  auto file = std::make_shared<std::string>();
  check->add_option("FILE", *file, "The JSON config file")->required();
  check->callback([&ctx, file] {
    ctx.action = [file] {
      auto path = resolve_config_path(*file);
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
    };
  });
}

} // namespace spool::cli
