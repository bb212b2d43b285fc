#include "runtime/api/service.hpp"

#include "runtime/api/assets.hpp"
#include "runtime/api/tokens.hpp"
#include "runtime/config/enqueue.hpp"
#include "runtime/metrics.hpp"
#include "runtime/pg/pool.hpp"
#include "runtime/api/status_page.hpp"
#include "runtime/store/context.hpp"
#include "runtime/store/inspect.hpp"
#include "runtime/store/store.hpp"
#include "runtime/store/task_input.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

namespace spool::api {

namespace json = boost::json;
using steady = std::chrono::steady_clock;

namespace {

// -- answers -------------------------------------------------------------------------

http::response error(int status, std::string_view code, std::string_view message,
                     std::string_view field = {}) {
  json::object e{{"code", code}, {"message", message}};
  if (!field.empty())
    e["field"] = field;
  return http::response::json(status, json::serialize(json::object{{"error", std::move(e)}}));
}

http::response ok_json(int status, const json::value& v) {
  return http::response::json(status, json::serialize(v));
}

/// A strong ETag of a view: FNV-1a of its bytes.
std::string etag_of(std::string_view body) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : body) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "\"%016llx\"", static_cast<unsigned long long>(h));
  return buf;
}

/// A positive job id from a path or query parameter.
std::optional<int64_t> parse_id(std::string_view s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || v <= 0)
    return std::nullopt;
  return v;
}

std::optional<double> parse_number(std::string_view s) {
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size())
    return std::nullopt;
  return v;
}

const std::set<std::string, std::less<>>& task_states() {
  static const std::set<std::string, std::less<>> s{"queued",
                                                    "running",
                                                    "awaiting_approval",
                                                    "completed",
                                                    "partially_completed",
                                                    "failed",
                                                    "cancelled"};
  return s;
}

/// The body of a POST, PUT or PATCH as JSON (an empty body: {}); nullopt
/// after answering 400 when it is not JSON.
std::optional<json::value> parse_body(const http::request& req, const http::responder& respond) {
  if (req.body.empty())
    return json::value(json::object{});
  json::error_code ec;
  auto v = json::parse(req.body, ec);
  if (ec) {
    respond(error(400, "invalid_request", "the body is not JSON: " + ec.message()));
    return std::nullopt;
  }
  return v;
}

/// The one view of a job a client gets, built by the database in one
/// statement; with its client, for the access check.
constexpr const char* view_sql =
  "SELECT json_build_object("
  "'id', t.id, 'client_id', t.client_id, 'campaign_id', t.campaign_id, "
  "'channel_id', t.channel_id, 'priority', t.priority, 'state', t.state, "
  "'approved', t.approved, "
  "'review', CASE WHEN t.reviewed_at IS NULL THEN NULL ELSE json_build_object("
  "  'at', t.reviewed_at, 'by', t.reviewed_by, 'note', t.review_note) END, "
  "'payload', t.payload, 'estimated_cost', t.estimated_cost::float8, "
  "'actual_cost', t.actual_cost::float8, 'retries', t.retry_count, "
  "'error', t.error_message, 'video_url', t.video_url, 'storyboard', t.storyboard_data, "
  "'created_at', t.created_at, 'updated_at', t.updated_at, 'finished_at', t.finished_at, "
  "'stages', (SELECT coalesce(json_agg(json_build_object("
  "    'stage', r.stage, 'state', r.state, 'attempt', r.attempt, "
  "    'awaits_approval', r.needs_approval AND NOT t.approved AND r.state = 'blocked', "
  "    'output', r.output, 'error_class', r.error_class, 'error', r.error_message, "
  "    'cost', r.cost::float8, 'estimated_cost', r.est_cost::float8, "
  "    'provider', r.provider, 'finished_at', r.finished_at) ORDER BY r.id), '[]') "
  "  FROM stage_runs r WHERE r.task_id = t.id)"
  ")::text, t.client_id FROM tasks t WHERE t.id = $1";

struct view {
  std::string body;
  std::string etag;
  std::string client_id;
  steady::time_point read_at;
};

struct waiter {
  std::string etag; // what the client has
  steady::time_point deadline;
  http::responder respond;
};

struct bucket {
  double tokens = 0;
  steady::time_point at;
};

} // namespace

struct service::impl {
  service_options opts;
  pg::pool pool;
  metrics::registry reg;
  metrics::family<metrics::counter>& requests =
    reg.counters("spool_api_requests_total", "Requests answered, by method and status.",
                 {"method", "status"});
  metrics::counter& queries =
    reg.counters("spool_api_view_reads_total",
                 "Database reads of job views and lists (the other answers came from the "
                 "cache).")
      .with({});
  metrics::gauge& long_polls =
    reg.gauges("spool_api_long_polls", "Long polls waiting for their job to change.").with({});

  std::mutex auth_mtx;
  std::map<std::string, std::pair<std::optional<principal>, steady::time_point>> auth_cache;
  bool tokens_exist = false;
  steady::time_point tokens_checked{};

  std::mutex rate_mtx;
  std::map<std::string, bucket> buckets;

  std::mutex view_mtx;
  std::map<int64_t, view> views;
  std::string status_body; // the last /status, reused for a second
  steady::time_point status_at{};

  std::mutex wait_mtx;
  std::condition_variable wait_cv;
  std::map<int64_t, std::vector<waiter>> waiters;
  std::set<int64_t> changed;
  bool all_changed = false;
  bool stopping = false;
  std::thread watcher;

  explicit impl(service_options o)
    : opts(std::move(o)), pool(opts.database_url, pool_options_of(opts)) {
  }

  static pg::pool_options pool_options_of(const service_options& o) {
    pg::pool_options p;
    p.size = o.connections;
    p.acquire_timeout = std::chrono::seconds{10};
    p.reconnect_timeout = std::chrono::seconds{5};
    p.connection.statement_timeout = std::chrono::seconds{10};
    p.connection.call_timeout = std::chrono::seconds{15};
    return p;
  }

  // -- access ---------------------------------------------------------------------

  /// The principal of the request, or the error to answer.
  /// Whether requests need no token now (open, and no live token exists;
  /// looked up at most every 3 s).
  bool open_now() {
    if (!opts.open_without_tokens)
      return false;
    auto now = steady::now();
    {
      std::lock_guard guard{auth_mtx};
      if (now - tokens_checked < std::chrono::seconds{3})
        return !tokens_exist;
    }
    bool exist = true; // when the database cannot tell, stay closed
    try {
      auto conn = pool.acquire();
      exist = any_live_token(*conn);
    } catch (const pg::error&) {
    }
    std::lock_guard guard{auth_mtx};
    tokens_exist = exist;
    tokens_checked = now;
    return !exist;
  }

  std::optional<principal> authenticate(const http::request& req, http::response& err) {
    if (open_now())
      return principal{};
    auto h = req.header("Authorization");
    if (!h.starts_with("Bearer ") || h.size() <= 7) {
      err = error(401, "unauthorized", "send Authorization: Bearer <token>");
      err.headers.emplace_back("WWW-Authenticate", "Bearer");
      return std::nullopt;
    }
    std::string token{h.substr(7)};
    auto now = steady::now();
    {
      std::lock_guard guard{auth_mtx};
      if (auto it = auth_cache.find(token); it != auth_cache.end() && it->second.second > now) {
        if (it->second.first)
          return it->second.first;
        err = error(401, "unauthorized", "unknown or revoked token");
        return std::nullopt;
      }
    }
    std::optional<principal> p;
    {
      auto conn = pool.acquire();
      p = verify_token(*conn, token);
    }
    std::lock_guard guard{auth_mtx};
    if (auth_cache.size() > 10000)
      auth_cache.clear(); // a flood of made-up tokens costs memory no longer
    // Known tokens for 10 s (a revoke takes effect within that), unknown 5 s.
    auth_cache[token] = {p, now + (p ? std::chrono::seconds{10} : std::chrono::seconds{5})};
    if (!p)
      err = error(401, "unauthorized", "unknown or revoked token");
    return p;
  }

  /// Whether the principal may make one more request now; else sets `err`.
  bool admit(const http::request& req, const principal& p, http::response& err) {
    auto key = p.token_id != 0 ? "token:" + std::to_string(p.token_id) : "peer:" + req.remote;
    auto now = steady::now();
    std::lock_guard guard{rate_mtx};
    auto& b = buckets[key];
    if (b.at == steady::time_point{}) {
      b.tokens = opts.burst;
    } else {
      b.tokens = std::min(opts.burst,
                          b.tokens + std::chrono::duration<double>(now - b.at).count()
                                       * opts.requests_per_s);
    }
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return true;
    }
    double wait_s = (1 - b.tokens) / opts.requests_per_s;
    err = error(429, "rate_limited",
                "over " + std::to_string(static_cast<int>(opts.requests_per_s))
                  + " requests a second");
    err.headers.emplace_back("Retry-After", std::to_string(static_cast<int>(wait_s) + 1));
    return false;
  }

  /// Runs `fn(principal)` for an authenticated, admitted request.
  template <class F>
  void guarded(const http::request& req, const http::responder& respond, F&& fn) {
    http::response err;
    auto p = authenticate(req, err);
    if (!p || !admit(req, *p, err)) {
      respond(std::move(err));
      return;
    }
    try {
      fn(*p);
    } catch (const store::input_error& e) {
      respond(error(400, "invalid_request", e.what()));
    } catch (const pg::error& e) {
      spdlog::warn("api: {} {}: {}", req.method, req.path, e.what());
      respond(error(503, "unavailable", "the database did not answer; try again"));
    }
  }

  // -- views ------------------------------------------------------------------------

  std::optional<view> read_view(int64_t id) {
    queries.inc();
    auto conn = pool.acquire();
    auto r = conn->query(view_sql, id);
    if (r.rows() == 0) {
      std::lock_guard guard{view_mtx};
      views.erase(id);
      return std::nullopt;
    }
    view v{r.str(0, 0), {}, r.str(0, 1), steady::now()};
    v.etag = etag_of(v.body);
    std::lock_guard guard{view_mtx};
    if (views.size() > 100000)
      views.clear();
    views[id] = v;
    return v;
  }

  /// The cached view while it is fresh (no NOTIFY since, younger than
  /// max_view_age), else a new read.
  std::optional<view> get_view(int64_t id) {
    {
      std::lock_guard guard{view_mtx};
      if (auto it = views.find(id);
          it != views.end() && steady::now() - it->second.read_at < opts.max_view_age)
        return it->second;
    }
    return read_view(id);
  }

  static bool may_see(const principal& p, const view& v) {
    return p.admin() || v.client_id == p.client_id;
  }

  http::response view_response(const view& v, int status = 200) {
    auto res = http::response::json(status, v.body);
    res.headers.emplace_back("ETag", v.etag);
    res.headers.emplace_back("Cache-Control", "no-cache");
    return res;
  }

  static http::response not_modified(const std::string& etag) {
    http::response res;
    res.status = 304;
    res.content_type = "application/json";
    res.headers.emplace_back("ETag", etag);
    return res;
  }

  // -- long polls ---------------------------------------------------------------------

  void watch() {
    std::unique_lock lock{wait_mtx};
    while (!stopping) {
      wait_cv.wait_for(lock, std::chrono::milliseconds{100});
      if (stopping)
        break;
      auto now = steady::now();
      std::set<int64_t> due; // tasks with a waiter to look at
      for (auto& [id, ws] : waiters) {
        bool expired = std::any_of(ws.begin(), ws.end(),
                                   [&](const waiter& w) { return w.deadline <= now; });
        if (all_changed || changed.count(id) != 0 || expired)
          due.insert(id);
      }
      changed.clear();
      all_changed = false;
      if (due.empty())
        continue;
      lock.unlock();
      std::vector<std::pair<http::responder, http::response>> answers;
      std::map<int64_t, std::optional<view>> fresh;
      for (auto id : due) {
        try {
          fresh[id] = read_view(id);
        } catch (const std::exception& e) {
          spdlog::warn("api: reading job {} for a long poll failed: {}", id, e.what());
        }
      }
      lock.lock();
      now = steady::now();
      for (auto& [id, v] : fresh) {
        auto it = waiters.find(id);
        if (it == waiters.end())
          continue;
        auto& ws = it->second;
        for (size_t i = 0; i < ws.size();) {
          auto& w = ws[i];
          if (!v) {
            answers.emplace_back(std::move(w.respond), error(404, "not_found", "no such job"));
          } else if (v->etag != w.etag) {
            answers.emplace_back(std::move(w.respond), view_response(*v));
          } else if (w.deadline <= now) {
            answers.emplace_back(std::move(w.respond), not_modified(v->etag));
          } else {
            ++i;
            continue;
          }
          ws.erase(ws.begin() + static_cast<ptrdiff_t>(i));
        }
        if (ws.empty())
          waiters.erase(it);
      }
      lock.unlock();
      for (auto& [respond, res] : answers)
        respond(std::move(res));
      lock.lock();
    }
    // Stopping: everyone waiting gets what there is.
    for (auto& [id, ws] : waiters)
      for (auto& w : ws)
        w.respond(not_modified(w.etag));
    waiters.clear();
  }

  // -- handlers --------------------------------------------------------------------------

  void get_job(const http::request& req, const http::responder& respond) {
    guarded(req, respond, [&](const principal& p) {
      auto id = parse_id(req.param("id"));
      if (!id) {
        respond(error(400, "invalid_request", "a job id is a positive integer", "id"));
        return;
      }
      double wait_s = 0;
      if (auto w = req.query_param("wait"); !w.empty()) {
        auto n = parse_number(w);
        if (!n || *n < 0 || *n > opts.max_wait_s) {
          respond(error(400, "invalid_request",
                        "wait is seconds from 0 to " + std::to_string(int(opts.max_wait_s)),
                        "wait"));
          return;
        }
        wait_s = *n;
      }
      auto v = get_view(*id);
      if (!v || !may_see(p, *v)) {
        respond(error(404, "not_found", "no job " + std::to_string(*id)));
        return;
      }
      std::string have{req.header("If-None-Match")};
      if (have != v->etag) {
        respond(view_response(*v));
        return;
      }
      if (wait_s <= 0) {
        respond(not_modified(v->etag));
        return;
      }
      std::lock_guard guard{wait_mtx};
      if (stopping) {
        respond(not_modified(v->etag));
        return;
      }
      waiters[*id].push_back(
        {v->etag, steady::now() + std::chrono::duration_cast<steady::duration>(
                                    std::chrono::duration<double>(wait_s)),
         respond});
    });
  }

  void list_jobs(const http::request& req, const http::responder& respond) {
    guarded(req, respond, [&](const principal& p) {
      auto client = req.query_param("client");
      if (!p.admin()) {
        if (!client.empty() && client != p.client_id) {
          respond(error(403, "forbidden", "this token sees only client " + p.client_id,
                        "client"));
          return;
        }
        client = p.client_id;
      }
      auto state = req.query_param("state");
      if (!state.empty() && task_states().count(state) == 0) {
        respond(error(400, "invalid_request",
                      "state is one of queued, running, awaiting_approval, completed, "
                      "partially_completed, failed, cancelled",
                      "state"));
        return;
      }
      int64_t limit = 50;
      if (auto l = req.query_param("limit"); !l.empty()) {
        auto n = parse_id(l);
        if (!n || *n > 500) {
          respond(error(400, "invalid_request", "limit is 1..500", "limit"));
          return;
        }
        limit = *n;
      }
      int64_t after = 0;
      if (auto a = req.query_param("after"); !a.empty()) {
        auto n = parse_id(a);
        if (!n) {
          respond(error(400, "invalid_request", "after is a job id (the previous page's next)",
                        "after"));
          return;
        }
        after = *n;
      }
      queries.inc();
      auto conn = pool.acquire();
      auto r = conn->query(
        "SELECT json_build_object('id', id, 'client_id', client_id, 'campaign_id', campaign_id, "
        "'channel_id', channel_id, 'priority', priority, 'state', state, 'approved', approved, "
        "'estimated_cost', estimated_cost::float8, 'actual_cost', actual_cost::float8, "
        "'video_url', video_url, 'created_at', created_at, 'updated_at', updated_at, "
        "'finished_at', finished_at)::text, id FROM tasks "
        "WHERE ($1 = '' OR client_id = $1) AND ($2 = '' OR campaign_id = $2) "
        "AND ($3 = '' OR state::text = $3) AND ($4 = 0 OR id < $4) "
        "ORDER BY id DESC LIMIT $5",
        client, req.query_param("campaign"), state, after, limit + 1);
      std::string body = "{\"jobs\":[";
      int n = std::min<int>(r.rows(), static_cast<int>(limit));
      for (int i = 0; i < n; ++i) {
        if (i)
          body += ',';
        body += r.text(i, 0);
      }
      body += "],\"next\":";
      body += r.rows() > limit ? "\"" + r.str(n - 1, 1) + "\"" : std::string{"null"};
      body += "}";
      respond(http::response::json(200, std::move(body)));
    });
  }

  void post_jobs(const http::request& req, const http::responder& respond) {
    guarded(req, respond, [&](const principal& p) {
      auto body = parse_body(req, respond);
      if (!body)
        return;
      bool many = body->is_array() || (body->is_object() && body->as_object().contains("jobs"));
      json::array items;
      if (body->is_array()) {
        items = body->as_array();
      } else if (many) {
        auto& j = body->as_object().at("jobs");
        if (!j.is_array()) {
          respond(error(400, "invalid_request", "jobs must be an array", "jobs"));
          return;
        }
        items = j.as_array();
      } else if (body->is_object()) {
        items.push_back(*body);
      } else {
        respond(error(400, "invalid_request", "the body is a job object or a list of them"));
        return;
      }
      if (items.empty()) {
        respond(error(400, "invalid_request", "no job to enqueue", many ? "jobs" : ""));
        return;
      }
      if (items.size() > opts.max_jobs_per_request) {
        respond(error(413, "too_many_jobs",
                      "at most " + std::to_string(opts.max_jobs_per_request)
                        + " jobs a request",
                      "jobs"));
        return;
      }
      std::string key{req.header("Idempotency-Key")};
      if (key.size() > 200) {
        respond(error(400, "invalid_request", "at most 200 bytes", "Idempotency-Key"));
        return;
      }
      // A client's jobs are its own; its idempotency keys live in its own
      // namespace (the same key from two clients makes two jobs).
      std::string lines;
      for (size_t i = 0; i < items.size(); ++i) {
        auto field = many ? "jobs[" + std::to_string(i) + "]" : std::string{};
        auto prefix = field.empty() ? "" : field + ".";
        if (!items[i].is_object()) {
          respond(error(400, "invalid_request", "a job is a JSON object", field));
          return;
        }
        auto& o = items[i].as_object();
        if (!p.admin()) {
          auto* c = o.if_contains("client_id");
          if (c != nullptr && !(c->is_string() && (c->as_string() == p.client_id))) {
            respond(error(403, "forbidden", "this token enqueues for client " + p.client_id,
                          prefix + "client_id"));
            return;
          }
          o["client_id"] = p.client_id;
        }
        if (!key.empty() && !o.contains("idempotency_key"))
          o["idempotency_key"] = many ? key + "#" + std::to_string(i) : key;
        if (!p.admin())
          if (auto* k = o.if_contains("idempotency_key"); k != nullptr && k->is_string())
            *k = p.client_id + ":" + std::string{k->as_string()};
        lines += json::serialize(o);
        lines += '\n';
      }
      std::vector<store::new_task> tasks;
      try {
        std::istringstream in{lines};
        tasks = store::parse_tasks_jsonl(in);
      } catch (const store::input_error& e) {
        // "line N" is job N-1 of the request.
        json::array problems;
        for (auto& pr : e.problems) {
          auto field = (many ? "jobs[" + std::to_string(pr.line - 1) + "]." : std::string{})
                       + pr.field;
          problems.push_back(json::object{{"field", field}, {"message", pr.message}});
        }
        auto& first = problems.front().as_object();
        json::object out{{"error", json::object{{"code", "invalid_request"},
                                                {"message", first.at("message")},
                                                {"field", first.at("field")},
                                                {"problems", problems}}}};
        respond(ok_json(400, out));
        return;
      }
      config::add_estimates(*opts.config, tasks);
      std::vector<store::enqueued> res;
      {
        auto conn = pool.acquire();
        res = store::store{*conn}.enqueue(tasks, config::pipeline_of(*opts.config));
      }
      json::array out;
      bool created = false;
      for (auto& r : res) {
        out.push_back(json::object{{"id", r.task_id}, {"created", r.created}});
        created = created || r.created;
      }
      if (!many) {
        respond(ok_json(created ? 201 : 200, out.front()));
        return;
      }
      respond(ok_json(created ? 201 : 200, json::object{{"jobs", out}}));
    });
  }

  /// The directory of a principal's assets ("_admin" for an admin's own).
  std::string asset_dir(const std::string& client) const {
    return opts.assets_dir + "/" + (client.empty() ? std::string{"_admin"} : client);
  }

  void upload(const http::request& req, const http::responder& respond) {
    guarded(req, respond, [&](const principal& p) {
      auto client = p.client_id;
      if (auto c = req.query_param("client"); !c.empty()) {
        if (!p.admin() && c != p.client_id) {
          respond(error(403, "forbidden", "this token uploads for client " + p.client_id,
                        "client"));
          return;
        }
        if (!store::valid_channel_id(c)) {
          respond(error(400, "invalid_request",
                        "a client id is 1-128 letters, digits and _ - . : @", "client"));
          return;
        }
        client = c;
      }
      if (req.body_file.empty()) {
        respond(error(400, "invalid_request", "send the asset's bytes as the request body"));
        return;
      }
      std::error_code ec;
      auto bytes = std::filesystem::file_size(req.body_file, ec);
      if (ec || bytes == 0) {
        respond(error(400, "invalid_request", "the body is empty"));
        return;
      }
      std::string head(16, '\0');
      {
        std::ifstream in(req.body_file, std::ios::binary);
        in.read(head.data(), 16);
        head.resize(static_cast<std::size_t>(in.gcount()));
      }
      auto type = sniff_type(head);
      if (!type) {
        // The server removes the file once this answer is written.
        respond(error(415, "unsupported_media_type",
                      "the content is not PNG, JPEG, WebP, MP4, MOV, WAV or MP3 (told by its "
                      "first bytes, not its name)"));
        return;
      }
      auto sha = sha256_file(req.body_file);
      auto dir = asset_dir(client);
      std::filesystem::create_directories(dir, ec);
      auto name = sha + "." + std::string{type->extension};
      auto dest = dir + "/" + name;
      bool created = !std::filesystem::exists(dest, ec);
      if (created) {
        std::filesystem::rename(req.body_file, dest, ec);
        if (ec) {
          respond(error(503, "unavailable", "storing the asset failed: " + ec.message()));
          return;
        }
      }
      auto url = "/api/v2/assets/" + (client.empty() ? std::string{"_admin"} : client) + "/"
                 + name;
      auto res = ok_json(created ? 201 : 200,
                         json::object{{"url", url},
                                      {"sha256", sha},
                                      {"type", type->mime},
                                      {"bytes", bytes},
                                      {"created", created}});
      res.headers.emplace_back("Location", url);
      respond(std::move(res));
    });
  }

  /// Answers with a file: whole (streamed) or one byte range of it.
  static void serve_file(const http::request& req, const http::responder& respond,
                         const std::string& path, const std::string& mime) {
    std::error_code ec;
    auto size = std::filesystem::file_size(path, ec);
    if (ec) {
      respond(error(404, "not_found", "no such file"));
      return;
    }
    auto ranged = parse_range(req.header("Range"), size);
    if (!ranged.satisfiable) {
      auto res = error(416, "range_not_satisfiable",
                       "the file has " + std::to_string(size) + " bytes");
      res.headers.emplace_back("Content-Range", "bytes */" + std::to_string(size));
      respond(std::move(res));
      return;
    }
    if (!ranged.range) {
      http::response res;
      res.content_type = mime;
      res.file = path;
      res.headers.emplace_back("Accept-Ranges", "bytes");
      respond(std::move(res));
      return;
    }
    // A range is read into memory, at most 8 MiB of it (a client asking
    // for more, as players do with "bytes=0-", gets the first 8 MiB and
    // asks again).
    auto r = *ranged.range;
    r.last = std::min<std::uint64_t>(r.last, r.first + (8u << 20) - 1);
    std::string body(static_cast<std::size_t>(r.last - r.first + 1), '\0');
    std::ifstream in(path, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(r.first));
    in.read(body.data(), static_cast<std::streamsize>(body.size()));
    if (!in) {
      respond(error(503, "unavailable", "reading the file failed"));
      return;
    }
    http::response res;
    res.status = 206;
    res.content_type = mime;
    res.body = std::move(body);
    res.headers.emplace_back("Accept-Ranges", "bytes");
    res.headers.emplace_back("Content-Range", "bytes " + std::to_string(r.first) + "-"
                                                + std::to_string(r.last) + "/"
                                                + std::to_string(size));
    respond(std::move(res));
  }

  /// A file a stage wrote for a job (storyboard frames, the video), under
  /// <data_dir>/tasks/<id>/<stage>/<name>.
  void job_file(const http::request& req, const http::responder& respond) {
    guarded(req, respond, [&](const principal& p) {
      auto id = parse_id(req.param("id"));
      std::string stage{req.param("stage")}, name{req.param("name")};
      auto plain = [](std::string_view s) {
        return !s.empty() && s.size() <= 200 && s.front() != '.'
               && std::all_of(s.begin(), s.end(), [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'
                           || c == '.';
                  });
      };
      auto client = id ? client_of(*id) : std::nullopt;
      if (!id || !plain(stage) || !plain(name) || !client
          || (!p.admin() && *client != p.client_id) || opts.data_dir.empty()) {
        respond(error(404, "not_found", "no such file"));
        return;
      }
      auto ext = name.substr(name.rfind('.') + 1);
      std::string mime{mime_of_extension(ext == "jpeg" ? "jpg" : ext)};
      if (mime.empty())
        mime = ext == "json" ? "application/json" : "application/octet-stream";
      serve_file(req, respond,
                 opts.data_dir + "/tasks/" + std::to_string(*id) + "/" + stage + "/" + name,
                 mime);
    });
  }

  /// The pipeline at a glance for the status page (admin): stages by state
  /// with their limits, tasks by state, today's money, providers, workers.
  void status(const http::request& req, const http::responder& respond) {
    guarded(req, respond, [&](const principal& p) {
      if (!p.admin()) {
        respond(error(403, "forbidden", "the cluster's status needs an admin token"));
        return;
      }
      {
        std::lock_guard guard{view_mtx};
        if (!status_body.empty() && steady::now() - status_at < std::chrono::seconds{1}) {
          respond(http::response::json(200, status_body));
          return;
        }
      }
      queries.inc();
      auto conn = pool.acquire();
      auto st = store::queue_status(*conn).as_object();
      json::object out;
      json::array stages;
      int64_t live = 0;
      for (auto& w : st.at("workers").as_array())
        live += w.at("state").as_string() == "live";
      for (auto& s : opts.config->stages) {
        json::object counts;
        if (auto* c = st.at("stages").as_object().if_contains(s.name))
          counts = c->as_object();
        stages.push_back(json::object{{"name", s.name},
                                      {"limit", s.max_concurrent * live},
                                      {"approval", s.approval},
                                      {"counts", counts}});
      }
      out["stages"] = std::move(stages);
      out["tasks"] = st.at("tasks");
      out["workers"] = live;
      if (auto* c = st.if_contains("cost"))
        out["cost"] = *c;
      auto prov = conn->exec(
        "SELECT coalesce(json_agg(json_build_object('name', name, 'running', running, "
        "'max_concurrent', max_concurrent, 'tokens', round(tokens::numeric, 1), "
        "'quota_used', quota_used, 'quota_units', quota_units, "
        "'paused', paused_until IS NOT NULL, 'breaker', breaker_state) ORDER BY name), "
        "'[]')::text FROM spool_providers_status(0)",
        {}, "reading providers");
      out["providers"] = json::parse(prov.text(0, 0));
      auto body = json::serialize(out);
      {
        std::lock_guard guard{view_mtx};
        status_body = body;
        status_at = steady::now();
      }
      respond(http::response::json(200, std::move(body)));
    });
  }

  void get_asset(const http::request& req, const http::responder& respond) {
    guarded(req, respond, [&](const principal& p) {
      std::string client{req.param("client")};
      std::string name{req.param("name")};
      bool own = p.admin() || client == p.client_id;
      if (!own || !valid_asset_name(name)
          || !(client == "_admin" || store::valid_channel_id(client))) {
        respond(error(404, "not_found", "no such asset"));
        return;
      }
      auto path = asset_dir(client == "_admin" ? "" : client) + "/" + name;
      serve_file(req, respond, path, std::string{mime_of_extension(name.substr(65))});
    });
  }

  /// GET and PUT of a client's brand guidelines (`campaign` false) or a
  /// campaign's brief. A client's token reaches only its own brand and
  /// campaigns (a campaign of another client is a 404).
  void context(const http::request& req, const http::responder& respond, bool is_campaign) {
    guarded(req, respond, [&](const principal& p) {
      std::string id{req.param("id")};
      auto who = "api:" + (p.admin() ? std::string{"admin"} : p.client_id);
      auto conn = pool.acquire();
      auto current = is_campaign ? store::campaign(*conn, id) : store::brand(*conn, id);
      bool mine = p.admin() || (is_campaign ? (!current || current->at("client_id").as_string()
                                                                == p.client_id)
                                            : id == p.client_id);
      auto what = is_campaign ? "no brief for campaign " + id
                              : "no brand guidelines for client " + id;
      if (!mine) {
        respond(error(404, "not_found", what));
        return;
      }
      if (req.method == "GET") {
        respond(current ? ok_json(200, *current) : error(404, "not_found", what));
        return;
      }
      auto body = parse_body(req, respond);
      if (!body)
        return;
      auto field = is_campaign ? "brief" : "guidelines";
      if (!body->is_object() || !body->as_object().contains(field)) {
        respond(error(400, "invalid_request", std::string{"send {\""} + field + "\": {...}}",
                      field));
        return;
      }
      if (auto o = only_keys(body->as_object(), {field, "client_id"})) {
        respond(std::move(*o));
        return;
      }
      auto& fields = body->as_object().at(field);
      if (auto problem = store::check_context_fields(fields, field); !problem.empty()) {
        auto colon = problem.find(':');
        respond(error(400, "invalid_request", problem.substr(colon + 2),
                      problem.substr(0, colon)));
        return;
      }
      try {
        if (is_campaign) {
          std::string client = p.client_id;
          if (auto* c = body->as_object().if_contains("client_id"); c != nullptr && p.admin()) {
            if (!c->is_string()) {
              respond(error(400, "invalid_request", "must be a string", "client_id"));
              return;
            }
            client = std::string{c->as_string()};
          }
          store::set_campaign(*conn, id, client, fields, who);
        } else {
          store::set_brand(*conn, id, fields, who);
        }
      } catch (const std::invalid_argument& e) {
        respond(error(400, "invalid_request", e.what(), is_campaign ? "campaign" : "client"));
        return;
      }
      auto saved = is_campaign ? store::campaign(*conn, id) : store::brand(*conn, id);
      respond(ok_json(current ? 200 : 201, *saved));
    });
  }

  /// The job's client, for an access check before a change; nullopt when
  /// there is no such job.
  std::optional<std::string> client_of(int64_t id) {
    auto conn = pool.acquire();
    auto r = conn->query("SELECT client_id FROM tasks WHERE id = $1", id);
    if (r.rows() == 0)
      return std::nullopt;
    return r.str(0, 0);
  }

  /// A change of one job: checks the id and access, runs `act` and answers
  /// with the job's fresh view (or act's own answer).
  template <class F>
  void change_job(const http::request& req, const http::responder& respond, F&& act) {
    guarded(req, respond, [&](const principal& p) {
      auto id = parse_id(req.param("id"));
      if (!id) {
        respond(error(400, "invalid_request", "a job id is a positive integer", "id"));
        return;
      }
      auto client = client_of(*id);
      if (!client || (!p.admin() && *client != p.client_id)) {
        respond(error(404, "not_found", "no job " + std::to_string(*id)));
        return;
      }
      auto body = parse_body(req, respond);
      if (!body)
        return;
      if (!body->is_object()) {
        respond(error(400, "invalid_request", "the body is a JSON object"));
        return;
      }
      auto who = "api:" + (p.admin() ? std::string{"admin"} : p.client_id)
                 + (p.token_id != 0 ? ":token" + std::to_string(p.token_id) : "");
      std::optional<http::response> answer = act(*id, body->as_object(), who);
      if (answer) {
        respond(std::move(*answer));
        return;
      }
      task_changed_now(*id);
      auto v = read_view(*id);
      respond(v ? view_response(*v) : error(404, "not_found", "no job " + std::to_string(*id)));
    });
  }

  /// Only the listed keys of a body; else the error naming the first other.
  static std::optional<http::response> only_keys(const json::object& o,
                                                 std::initializer_list<std::string_view> keys) {
    for (auto& [k, v] : o)
      if (std::find(keys.begin(), keys.end(), std::string_view{k}) == keys.end())
        return error(400, "invalid_request", "unknown field", std::string{k});
    return std::nullopt;
  }

  /// A text field of at most 2000 bytes; required when `required`.
  static std::optional<http::response> text_field(const json::object& o, std::string_view name,
                                                  bool required, std::string& out) {
    auto* v = o.if_contains(name);
    if (v == nullptr) {
      if (required)
        return error(400, "invalid_request", "required", name);
      return std::nullopt;
    }
    if (!v->is_string())
      return error(400, "invalid_request", "must be a string", name);
    out = std::string{v->as_string()};
    if (required && out.empty())
      return error(400, "invalid_request", "must not be empty", name);
    if (out.size() > 2000)
      return error(400, "invalid_request", "at most 2000 bytes", name);
    return std::nullopt;
  }

  static std::optional<http::response> decided(const std::string& result) {
    if (result == "finished")
      return error(409, "conflict", "the job has finished: nothing to decide");
    if (result == "not_found")
      return error(404, "not_found", "no such job");
    return std::nullopt;
  }

  void task_changed_now(int64_t id) {
    std::lock_guard guard{view_mtx};
    views.erase(id);
  }
};

service::service(service_options opts) : impl_(std::make_unique<impl>(std::move(opts))) {
  impl_->watcher = std::thread{[this] { impl_->watch(); }};
}

service::~service() {
  stop();
}

void service::stop() {
  {
    std::lock_guard guard{impl_->wait_mtx};
    if (impl_->stopping)
      return;
    impl_->stopping = true;
  }
  impl_->wait_cv.notify_all();
  if (impl_->watcher.joinable())
    impl_->watcher.join();
}

std::uint64_t service::view_queries() const noexcept {
  return static_cast<std::uint64_t>(impl_->queries.value());
}

void service::task_changed(const std::vector<int64_t>& ids) {
  {
    std::lock_guard guard{impl_->view_mtx};
    if (ids.empty())
      impl_->views.clear();
    for (auto id : ids)
      impl_->views.erase(id);
  }
  {
    std::lock_guard guard{impl_->wait_mtx};
    if (ids.empty())
      impl_->all_changed = true;
    impl_->changed.insert(ids.begin(), ids.end());
  }
  impl_->wait_cv.notify_all();
}

std::optional<std::size_t> service::streamed_body(const http::request& req,
                                                  std::optional<http::response>& refuse) const {
  if (req.method != "POST" || req.path != "/api/v2/upload-asset")
    return std::nullopt;
  http::response err;
  try {
    if (!impl_->authenticate(req, err)) {
      impl_->requests.with({"POST", std::to_string(err.status)}).inc();
      refuse = std::move(err);
    }
  } catch (const pg::error&) {
    refuse = error(503, "unavailable", "the database did not answer; try again");
  }
  return max_asset_bytes;
}

std::string service::render_metrics() const {
  auto& m = *impl_;
  std::size_t waiting = 0;
  {
    std::lock_guard guard{m.wait_mtx};
    for (auto& [id, ws] : m.waiters)
      waiting += ws.size();
  }
  m.long_polls.set(static_cast<double>(waiting));
  return m.reg.render();
}

void service::add_routes(http::router& r) {
  auto* m = impl_.get();
  // Every answer is counted by method and status.
  auto counted = [m](const char* method, auto handle) {
    return [m, method, handle](const http::request& req, http::responder respond) {
      handle(req, [m, method, respond = std::move(respond)](http::response res) {
        m->requests.with({method, std::to_string(res.status)}).inc();
        respond(std::move(res));
      });
    };
  };
  for (const char* method : {"GET", "PUT"}) {
    r.on_async(method, "/api/v2/brands/{id}",
               counted(method, [m](const http::request& req, http::responder respond) {
                 m->context(req, respond, false);
               }));
    r.on_async(method, "/api/v2/campaigns/{id}",
               counted(method, [m](const http::request& req, http::responder respond) {
                 m->context(req, respond, true);
               }));
  }
  // A route answered by one of impl's handlers.
  auto route = [&r, counted, m](const char* method, const char* path,
                                void (impl::*fn)(const http::request&, const http::responder&)) {
    r.on_async(method, path,
               counted(method, [m, fn](const http::request& req, http::responder respond) {
                 (m->*fn)(req, respond);
               }));
  };
  r.otherwise([](const http::request& req) {
    return req.path.starts_with("/api/")
             ? error(404, "not_found", "no such endpoint: " + req.method + " " + req.path)
             : http::response::text(404, "not found: " + req.path + "\n");
  });
  r.on("GET", "/", [](const http::request&) {
    auto res = http::response::text(200, std::string{status_page_html()});
    res.content_type = "text/html; charset=utf-8";
    res.headers.emplace_back("Cache-Control", "no-cache");
    return res;
  });
  route("GET", "/api/v2/status", &impl::status);
  route("GET", "/api/v2/jobs/{id}/files/{stage}/{name}", &impl::job_file);
  route("POST", "/api/v2/upload-asset", &impl::upload);
  route("GET", "/api/v2/assets/{client}/{name}", &impl::get_asset);
  route("GET", "/api/v2/jobs/{id}", &impl::get_job);
  route("GET", "/api/v2/jobs", &impl::list_jobs);
  route("POST", "/api/v2/jobs", &impl::post_jobs);
  // approve {"note"} and reject {"reason"}: one text field, then the gate.
  using decide_fn = std::string (store::store::*)(int64_t, std::string_view, std::string_view);
  auto decision = [&r, counted, m](const char* path, const char* field, bool required,
                                   decide_fn decide) {
    r.on_async("POST", path,
               counted("POST", [m, field, required, decide](const http::request& req,
                                                            http::responder respond) {
                 m->change_job(req, respond,
                               [m, field, required, decide](
                                 int64_t id, const json::object& o,
                                 const std::string& who) -> std::optional<http::response> {
                                 std::string text;
                                 if (auto e = impl::only_keys(o, {field}))
                                   return e;
                                 if (auto e = impl::text_field(o, field, required, text))
                                   return e;
                                 auto conn = m->pool.acquire();
                                 store::store st{*conn};
                                 return impl::decided((st.*decide)(id, who, text));
                               });
               }));
  };
  decision("/api/v2/jobs/{id}/approve", "note", false, &store::store::approve);
  decision("/api/v2/jobs/{id}/reject", "reason", true, &store::store::reject);
  r.on_async("POST", "/api/v2/jobs/{id}/cancel",
             counted("POST", [m](const http::request& req, http::responder respond) {
               m->change_job(req, respond,
                             [m](int64_t id, const json::object& o,
                                 const std::string&) -> std::optional<http::response> {
                               if (auto e = impl::only_keys(o, {}))
                                 return e;
                               auto conn = m->pool.acquire();
                               auto state = conn->query("SELECT state::text FROM tasks "
                                                        "WHERE id = $1",
                                                        id)
                                              .str(0, 0);
                               if (state == "completed" || state == "partially_completed"
                                   || state == "failed" || state == "cancelled")
                                 return error(409, "conflict",
                                              "the job has finished (" + state + ")");
                               store::store{*conn}.cancel(id);
                               return std::nullopt;
                             });
             }));
  r.on_async("PATCH", "/api/v2/jobs/{id}",
             counted("PATCH", [m](const http::request& req, http::responder respond) {
               m->change_job(req, respond,
                             [m](int64_t id, const json::object& o,
                                 const std::string&) -> std::optional<http::response> {
                               if (auto e = impl::only_keys(o, {"priority"}))
                                 return e;
                               auto* v = o.if_contains("priority");
                               auto prio = v != nullptr && v->is_string()
                                             ? store::parse_priority(v->as_string())
                                             : std::nullopt;
                               if (!prio)
                                 return error(400, "invalid_request",
                                              "priority is high, normal or low", "priority");
                               auto conn = m->pool.acquire();
                               store::store{*conn}.set_priority(id, *prio);
                               return std::nullopt;
                             });
             }));
}

} // namespace spool::api
