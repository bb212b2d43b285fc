// spool run: the worker.

#include "actors/worker.hpp"
#include "cli/commands.hpp"
#include "runtime/http/monitoring.hpp"

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <pthread.h>
#include <stdexcept>

namespace spool::cli {

std::string data_dir_for(const config::snapshot& cfg) {
  std::filesystem::path p{cfg.data_dir};
  if (p.is_relative())
    p = std::filesystem::current_path() / p;
  std::filesystem::create_directories(p);
  return p.lexically_normal().string();
}

std::optional<std::string> http_listen_override(const std::string& flag) {
  const char* env = std::getenv("SPOOL_HTTP");
  auto [value, what] = !flag.empty()                    ? std::pair{flag, "--http"}
                       : env != nullptr && *env != '\0' ? std::pair{std::string{env}, "SPOOL_HTTP"}
                                                        : std::pair{std::string{}, ""};
  if (value.empty())
    return std::nullopt;
  http::endpoint ep;
  if (auto problem = http::parse_endpoint(value, ep); value != "off" && !problem.empty())
    throw std::invalid_argument(std::string{what} + ": " + problem + " (or off), got \""
                                + value + "\"");
  return value;
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
  wo.http_listen = http_listen_override(o.http);
  if (o.cluster_metrics)
    wo.cluster_metrics = true;
  // The client API inside the worker: its threads start with the signals
  // blocked (as run_worker's own), so that only the worker's signal thread
  // gets them.
  std::unique_ptr<api_server> api;
  if (!o.api.empty()) {
    sigset_t sigs;
    sigemptyset(&sigs);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR1})
      sigaddset(&sigs, s);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    api = std::make_unique<api_server>(wo.database_url, loaded.config, o.api);
    spdlog::info("client API and status page on http://{}/{}", api->address(),
                 api->open() ? " (open: no API token exists yet; loopback only)" : "");
  }
  int code = actors::run_worker(loaded.config, wo);
  if (api)
    api->stop();
  return code;
}

int exporter(const global_options& g, const exporter_options& o) {
  http::server_options so;
  if (auto problem = http::parse_endpoint(o.http, so.listen); !problem.empty())
    throw std::invalid_argument("--http: " + problem + ", got \"" + o.http + "\"");
  auto loaded = load_config_source(g, o.config);
  std::shared_ptr<const config::snapshot> cfg = loaded.config;
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM})
    sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr); // before the server's threads start
  http::monitoring_options mo;
  mo.database_url = database_url(g, cfg.get());
  mo.cluster_metrics = true;
  mo.config = [cfg] { return cfg; };
  http::monitoring mon{std::move(mo)};
  http::router routes;
  mon.add_routes(routes);
  http::server server{std::move(so), std::move(routes)}; // throws naming the address
  spdlog::info("exporter: serving the cluster's metrics on http://{}/metrics",
               server.address());
  std::printf("spool exporter: http://%s/metrics\n", server.address().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("exporter: got {}: stopping", strsignal(sig));
  server.stop();
  return 0;
}

} // namespace spool::cli
