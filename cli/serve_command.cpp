// spool serve: the client API (runtime/api/service.hpp) with /healthz and
// /readyz; spool token: its bearer tokens.

#include "cli/commands.hpp"
#include "runtime/api/service.hpp"
#include "runtime/api/tokens.hpp"
#include "runtime/http/monitoring.hpp"
#include "runtime/pg/connection.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <charconv>
#include <csignal>
#include <filesystem>
#include <cstdio>
#include <iostream>
#include <pthread.h>
#include <pwd.h>
#include <thread>
#include <unistd.h>

namespace spool::cli {

namespace {

bool loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

/// Task ids of a spool_task payload; empty for '*' or a payload it cannot
/// read (then everything counts as changed).
std::vector<int64_t> task_ids(std::string_view payload) {
  std::vector<int64_t> out;
  while (!payload.empty()) {
    auto comma = payload.find(',');
    auto item = payload.substr(0, comma);
    int64_t id = 0;
    auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    if (ec != std::errc{} || p != item.data() + item.size())
      return {};
    out.push_back(id);
    payload = comma == std::string_view::npos ? std::string_view{} : payload.substr(comma + 1);
  }
  return out;
}

/// Follows NOTIFY spool_task into the service until `stop`; after a lost
/// connection (notifications may have been missed) every job counts as
/// changed.
void follow_tasks(const std::string& url, api::service& svc, const std::atomic<bool>& stop) {
  std::unique_ptr<pg::connection> conn;
  auto backoff = std::chrono::milliseconds{100};
  while (!stop) {
    try {
      if (!conn) {
        pg::connection_options o;
        o.connect_timeout = std::chrono::seconds{5};
        o.keepalives_idle_s = 10;
        o.keepalives_interval_s = 5;
        o.keepalives_count = 3;
        conn = std::make_unique<pg::connection>(url, o);
        conn->listen("spool_task");
        svc.task_changed({});
        backoff = std::chrono::milliseconds{100};
      }
      conn->wait_readable(std::chrono::milliseconds{200});
      for (auto& n : conn->drain_notifications())
        svc.task_changed(task_ids(n.payload));
    } catch (const std::exception& e) {
      if (conn)
        spdlog::warn("serve: listening for job changes failed (reconnecting): {}", e.what());
      conn.reset();
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds{5000});
    }
  }
}


} // namespace

struct api_server::parts {
  std::unique_ptr<api::service> svc;
  std::unique_ptr<http::monitoring> mon;
  std::unique_ptr<http::server> server;
  std::atomic<bool> stop{false};
  std::thread follower;
  bool open = false;
};

api_server::api_server(const std::string& url, std::shared_ptr<const config::snapshot> cfg,
                       const std::string& listen, const std::string& data_dir)
  : p_(std::make_unique<parts>()) {
  http::server_options so;
  if (auto problem = http::parse_endpoint(listen, so.listen); !problem.empty())
    throw std::invalid_argument("--http: " + problem + ", got \"" + listen + "\"");
  so.threads = 4;
  so.max_body_bytes = static_cast<std::size_t>(cfg->api.max_request_bytes);
  {
    pg::connection conn{url};
    p_->open = !api::any_live_token(conn);
  }
  bool local = loopback(so.listen.host);
  if (p_->open && !local)
    throw std::invalid_argument("serve: no API token exists, so the API would be open: create "
                                "one (spool token create --admin) or listen on a loopback "
                                "address, got " + listen);
  api::service_options ao;
  ao.database_url = url;
  ao.config = cfg;
  ao.data_dir = data_dir.empty() ? data_dir_for(*cfg) : data_dir;
  ao.assets_dir = ao.data_dir + "/assets";
  std::filesystem::create_directories(ao.assets_dir + "/.incoming");
  so.spool_dir = ao.assets_dir + "/.incoming";
  ao.open_without_tokens = local;
  ao.requests_per_s = cfg->api.requests_per_s;
  ao.burst = cfg->api.burst;
  p_->svc = std::make_unique<api::service>(ao);
  auto* svc = p_->svc.get();
  http::monitoring_options mo;
  mo.database_url = url;
  mo.config = [cfg] { return cfg; };
  mo.extra_metrics = [svc] { return svc->render_metrics(); };
  p_->mon = std::make_unique<http::monitoring>(mo);
  so.streamed_body = [svc](const http::request& req, std::optional<http::response>& refuse) {
    return svc->streamed_body(req, refuse);
  };
  http::router routes;
  svc->add_routes(routes);
  p_->mon->add_routes(routes);
  p_->follower = std::thread{[this, url] { follow_tasks(url, *p_->svc, p_->stop); }};
  try {
    p_->server = std::make_unique<http::server>(so, routes);
  } catch (...) {
    stop();
    throw;
  }
}

api_server::~api_server() {
  stop();
}

std::string api_server::address() const {
  return p_->server ? p_->server->address() : std::string{};
}

bool api_server::open() const noexcept {
  return p_->open;
}

void api_server::stop() {
  if (p_->svc)
    p_->svc->stop(); // long polls answer now
  if (p_->server)
    p_->server->stop();
  p_->stop = true;
  if (p_->follower.joinable())
    p_->follower.join();
}

int serve(const global_options& g, const serve_options& o) {
  auto loaded = load_config_source(g, o.config);
  auto cfg = loaded.config;
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM})
    sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr); // before any thread starts
  api_server server{database_url(g, cfg.get()), cfg, o.http.empty() ? cfg->api.listen : o.http};
  std::printf("spool serve: http://%s/api/v2%s\n", server.address().c_str(),
              server.open() ? " (open: no API token exists yet; loopback only)" : "");
  std::fflush(stdout);
  spdlog::info("serve: listening on http://{}", server.address());
  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("serve: got {}: stopping", strsignal(sig));
  server.stop();
  return 0;
}

int token_create(const global_options& g, const token_options& o) {
  if (o.admin == !o.client.empty())
    throw std::invalid_argument("token create: give --client ID or --admin");
  pg::connection conn{database_url(g)};
  auto t = api::create_token(conn, o.admin ? std::nullopt : std::optional{o.client}, o.name,
                             cli_user());
  std::printf("%s\n", t.token.c_str());
  std::fprintf(stderr, "token %lld for %s: keep it now, it is not shown again\n",
               static_cast<long long>(t.id), o.admin ? "admin" : ("client " + o.client).c_str());
  return 0;
}

int token_revoke(const global_options& g, int64_t id) {
  pg::connection conn{database_url(g)};
  if (!api::revoke_token(conn, id)) {
    std::fprintf(stderr, "spool: no live token %lld\n", static_cast<long long>(id));
    return 1;
  }
  std::printf("token %lld revoked\n", static_cast<long long>(id));
  return 0;
}

int token_list(const global_options& g, bool as_json) {
  pg::connection conn{database_url(g)};
  auto list = api::list_tokens(conn);
  if (as_json) {
    std::cout << boost::json::serialize(list) << "\n";
    return 0;
  }
  for (auto& v : list.as_array()) {
    auto& t = v.as_object();
    auto text = [&](const char* k) {
      auto& x = t.at(k);
      return x.is_null() ? std::string{"-"} : std::string{x.as_string()};
    };
    std::printf("%4lld  %-8s  %-24s %-12s created %s by %s%s\n",
                static_cast<long long>(t.at("id").as_int64()), text("prefix").c_str(),
                t.at("client_id").is_null() ? "admin" : ("client " + text("client_id")).c_str(),
                text("name").c_str(), text("created_at").c_str(), text("created_by").c_str(),
                t.at("revoked_at").is_null() ? "" : ("  revoked " + text("revoked_at")).c_str());
  }
  return 0;
}

} // namespace spool::cli
