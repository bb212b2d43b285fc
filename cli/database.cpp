// Which database a command talks to: one rule for every subcommand.

#include "cli/commands.hpp"
#include "runtime/config/config.hpp"
#include "runtime/local_db.hpp"
#include "runtime/pg/error.hpp"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <stdexcept>

namespace spool::cli {

const char* to_string(url_source s) noexcept {
  switch (s) {
    case url_source::option:
      return "--database-url";
    case url_source::environment:
      return "SPOOL_DATABASE_URL";
    case url_source::config:
      return "the config's database_url";
    case url_source::managed:
      break;
  }
  return "the managed local cluster";
}

url_choice choose_database_url(const global_options& g, const config::snapshot* cfg,
                               const char* env) {
  if (g.database_url) {
    if (g.database_url->empty())
      throw std::invalid_argument("--database-url: must not be empty");
    return {url_source::option, *g.database_url};
  }
  if (env != nullptr && *env != '\0')
    return {url_source::environment, env};
  if (cfg != nullptr && !cfg->database_url.empty())
    return {url_source::config, cfg->database_url};
  return {url_source::managed, {}};
}

std::string database_url(const global_options& g, const config::snapshot* cfg) {
  auto choice = choose_database_url(g, cfg, std::getenv("SPOOL_DATABASE_URL"));
  if (choice.source == url_source::managed) {
    local_cluster cluster;
    cluster.start();
    choice.url = cluster.url();
  }
  // A plain string through the non-template overload: fmt's format
  // machinery would cost this small file seconds of compile time.
  auto line = "database " + pg::redact_url(choice.url) + " (from " + to_string(choice.source) + ")";
  spdlog::default_logger_raw()->log(spdlog::source_loc{}, spdlog::level::debug,
                                    spdlog::string_view_t{line});
  return choice.url;
}

} // namespace spool::cli
