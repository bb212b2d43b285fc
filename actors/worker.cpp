#include "actors/worker.hpp"

#include "actors/messages.hpp"
#include "actors/supervisor.hpp"
#include "runtime/exec/command_runner.hpp"
#include "runtime/http/monitoring.hpp"
#include "runtime/worker_metrics.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <mutex>
#include <pthread.h>
#include <random>
#include <thread>
#include <unistd.h>

namespace spool::actors {

std::string make_worker_id() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::random_device rd;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%06x", rd() & 0xffffff);
  return std::string{host} + ":" + std::to_string(::getpid()) + ":" + suffix;
}

namespace {

/// The worker's HTTP endpoint (/metrics, /healthz, /readyz), or null when
/// it is off or cannot listen (the worker runs on without it: work never
/// stops for want of metrics).
struct http_endpoint {
  std::unique_ptr<http::monitoring> monitoring;
  std::unique_ptr<http::server> server;
};

http_endpoint start_http(const config::snapshot& cfg, const worker_options& opts,
                         std::shared_ptr<worker_metrics> metrics,
                         std::function<std::string()> health) {
  http_endpoint out;
  auto listen = opts.http_listen.value_or(cfg.http.listen);
  if (listen == "off")
    return out;
  http::server_options so;
  if (auto problem = http::parse_endpoint(listen, so.listen); !problem.empty()) {
    spdlog::error("http: cannot listen on \"{}\": {}; this worker serves no metrics", listen,
                  problem);
    return out;
  }
  http::monitoring_options mo;
  mo.database_url = opts.database_url;
  mo.cluster_metrics = opts.cluster_metrics.value_or(cfg.http.cluster_metrics);
  mo.health = std::move(health);
  mo.draining = [metrics] { return metrics->is_draining(); };
  mo.config = [metrics] { return metrics->config(); };
  mo.metrics = std::move(metrics);
  out.monitoring = std::make_unique<http::monitoring>(std::move(mo));
  http::router routes;
  out.monitoring->add_routes(routes);
  try {
    out.server = std::make_unique<http::server>(std::move(so), std::move(routes));
  } catch (const std::exception& e) {
    spdlog::error("http: {}; this worker serves no metrics (set http.listen or --http)",
                  e.what());
    out.monitoring.reset();
    return out;
  }
  spdlog::info("http: serving /metrics, /healthz and /readyz on http://{}{}",
               out.server->address(),
               out.monitoring && opts.cluster_metrics.value_or(cfg.http.cluster_metrics)
                 ? " (with the cluster's metrics)"
                 : "");
  return out;
}

} // namespace

int run_worker(std::shared_ptr<const config::snapshot> config, const worker_options& opts) {
  // A write to a closed pipe (`spool run 2>&1 | head -1`) fails with EPIPE
  // instead of killing the worker; spdlog ignores the failed write. Stage
  // programs start with default dispositions (the runner resets them).
  std::signal(SIGPIPE, SIG_IGN);
  // Block the signals before any thread starts: CAF's threads and the
  // runner's inherit the mask, and one thread below waits for them.
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR1})
    sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  auto runner = std::make_shared<exec::command_runner>();
  auto exit_code = std::make_shared<std::atomic<int>>(1);
  int code = 1;
  {
    caf::actor_system_config cfg;
    // One shared job queue whose idle threads wait on a condition variable.
    // Measured against CAF's default work stealing (whose idle threads back
    // off through polling phases) on 2 cores: pickup p50 0.75 -> 0.67 ms,
    // no-op jobs/s at 10 actors 9,400 -> 13,000 and at 32 19,400 -> 21,600.
    // The worker's actors are few and message-driven; stealing buys nothing.
    cfg.set("scheduler.policy", caf::atom("sharing"));
    caf::actor_system sys{cfg};
    auto metrics = std::make_shared<worker_metrics>();
    metrics->config_applied(config, opts.config_stored_version);
    // The supervisor answers pings while its mailbox is served; the HTTP
    // threads ask it (never a scheduler thread: a scoped actor blocks).
    auto sup_ref = std::make_shared<std::pair<std::mutex, caf::actor>>();
    auto health = [&sys, sup_ref]() -> std::string {
      caf::actor sup;
      {
        std::lock_guard guard{sup_ref->first};
        sup = sup_ref->second;
      }
      if (!sup)
        return "starting";
      caf::scoped_actor self{sys};
      std::string problem = "the supervisor did not answer within 2 s";
      self->request(sup, caf::duration{std::chrono::seconds{2}}, ping_atom::value)
        .receive([&](bool) { problem.clear(); },
                 [&](caf::error& e) { problem = "the supervisor: " + sys.render(e); });
      return problem;
    };
    auto endpoint = start_http(*config, opts, metrics, health);
    supervisor_options so;
    so.metrics = metrics;
    if (endpoint.server)
      so.http_address = endpoint.server->address();
    so.database_url = opts.database_url;
    so.worker_id = make_worker_id();
    so.data_dir = opts.data_dir;
    so.exit_when_idle = opts.exit_when_idle;
    so.config_source = opts.config_source;
    so.config_stored_version = opts.config_stored_version;
    so.watch_config = opts.watch_config;
    so.runner = runner;
    so.exit_code = exit_code;
    auto sup = spawn_supervisor(sys, std::move(config), so);
    {
      std::lock_guard guard{sup_ref->first};
      sup_ref->second = sup;
    }

    std::thread signals{[&sigs, sup, runner] {
      int received = 0;
      for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0 || sig == SIGUSR1)
          return;
        if (sig == SIGHUP) {
          // Re-read the configuration; never stop the worker for it.
          spdlog::info("got {}: re-reading the configuration", strsignal(sig));
          caf::anon_send(sup, reload_atom::value, std::string{"SIGHUP"});
          continue;
        }
        if (++received == 1) {
          spdlog::info("got {}: draining (send it again to exit at once)", strsignal(sig));
          caf::anon_send(sup, drain_atom::value);
        } else {
          spdlog::warn("got {} again: exiting now; this worker's leases will expire and "
                       "be rescued",
                       strsignal(sig));
          runner->kill_all_now(); // no stage program outlives us
          spdlog::default_logger()->flush();
          ::_exit(128 + sig);
        }
      }
    }};
    {
      caf::scoped_actor self{sys};
      self->monitor(sup);
      self->receive([&](const caf::down_msg& dm) {
        code = dm.reason == caf::exit_reason::normal ? 0 : 1;
      });
    }
    if (code != 0) {
      // Not a clean drain: a database actor may be blocked in a call the
      // server never answers, and the actor system would wait for it on
      // destruction. What this worker held is rescued by others.
      runner->kill_all_now();
      spdlog::default_logger()->flush();
      ::_exit(code);
    }
    ::pthread_kill(signals.native_handle(), SIGUSR1); // ends the signal thread
    signals.join();
    if (endpoint.server)
      endpoint.server->stop(); // before the actor system its health check asks
    {
      std::lock_guard guard{sup_ref->first};
      sup_ref->second = nullptr;
    }
  }
  return code;
}

} // namespace spool::actors
