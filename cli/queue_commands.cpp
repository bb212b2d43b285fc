// spool enqueue | task show | priority | cancel | status

#include "cli/commands.hpp"
#include "runtime/config/config.hpp"
#include "runtime/config/enqueue.hpp"
#include "runtime/pg/connection.hpp"
#include "runtime/store/inspect.hpp"
#include "runtime/store/task_input.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <cstdlib>
#include <iostream>
#include <pwd.h>
#include <unistd.h>

namespace spool::cli {

namespace json = boost::json;

namespace {

std::string text_of(const json::value& v) {
  if (v.is_string())
    return std::string{v.as_string()};
  if (v.is_null())
    return "-";
  if (v.is_double()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", v.as_double());
    return buf;
  }
  return json::serialize(v);
}

/// "45s", "3m12s", "2h05m", "3d04h".
std::string duration_text(double seconds) {
  auto s = static_cast<long long>(seconds < 0 ? 0 : seconds);
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%llds", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else if (s < 86400)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s % 3600 / 60);
  else
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
  return buf;
}

void print_task(const json::object& t) {
  std::printf("task %s  %s  channel %s  priority %s\n", text_of(t.at("id")).c_str(),
              text_of(t.at("state")).c_str(), text_of(t.at("channel_id")).c_str(),
              text_of(t.at("priority")).c_str());
  std::printf("  client %s  campaign %s  cost %s (estimated %s)  retries %s\n",
              text_of(t.at("client_id")).c_str(), text_of(t.at("campaign_id")).c_str(),
              text_of(t.at("actual_cost")).c_str(), text_of(t.at("estimated_cost")).c_str(),
              text_of(t.at("retry_count")).c_str());
  if (!t.at("overrun_at").is_null())
    std::printf("  cost overrun since %s: actual past budgets.overrun_factor x the estimate\n",
                text_of(t.at("overrun_at")).c_str());
  if (!t.at("reviewed_at").is_null())
    std::printf("  %s by %s at %s%s%s\n", t.at("approved").as_bool() ? "approved" : "rejected",
                text_of(t.at("reviewed_by")).c_str(), text_of(t.at("reviewed_at")).c_str(),
                t.at("review_note").is_null() ? "" : ": ",
                t.at("review_note").is_null() ? "" : text_of(t.at("review_note")).c_str());
  else if (text_of(t.at("state")) == "awaiting_approval")
    std::printf("  awaiting approval: spool approve %s (or spool reject %s --reason ...)\n",
                text_of(t.at("id")).c_str(), text_of(t.at("id")).c_str());
  if (!t.at("video_url").is_null())
    std::printf("  video %s\n", text_of(t.at("video_url")).c_str());
  if (!t.at("error_message").is_null())
    std::printf("  error %s\n", text_of(t.at("error_message")).c_str());
  std::printf("  payload %s\n", text_of(t.at("payload")).c_str());
  // fails: attempts a provider could have seen that failed (the retry
  // limit); lost: leases lost because a worker died or stalled (their own
  // limit).
  std::printf("\n  %-12s %-10s %7s %6s %5s  %s\n", "stage", "state", "attempt", "fails", "lost",
              "detail");
  for (auto& rv : t.at("stage_runs").as_array()) {
    auto& r = rv.as_object();
    std::string detail;
    if (!r.at("error_class").is_null())
      detail = text_of(r.at("error_class")) + ": " + text_of(r.at("error_message"));
    else if (!r.at("lease_owner").is_null())
      detail = "held by " + text_of(r.at("lease_owner"));
    else if (!r.at("output").is_null())
      detail = text_of(r.at("output"));
    if (detail.size() > 100) {
      detail.resize(97);
      detail += "...";
    }
    std::printf("  %-12s %-10s %7s %6s %5s  %s\n", text_of(r.at("stage")).c_str(),
                text_of(r.at("state")).c_str(), text_of(r.at("attempt")).c_str(),
                text_of(r.at("failed_attempts")).c_str(), text_of(r.at("lost_attempts")).c_str(),
                detail.c_str());
  }
  auto& attempts = t.at("attempts").as_array();
  if (!attempts.empty()) {
    std::printf("\n  %-12s %7s %-10s %8s  %-12s %s\n", "stage", "attempt", "outcome", "seconds",
                "provider", "worker");
    for (auto& av : attempts) {
      auto& a = av.as_object();
      char secs[32];
      std::snprintf(secs, sizeof secs, "%.2f", a.at("seconds").to_number<double>());
      std::printf("  %-12s %7s %-10s %8s  %-12s %s\n", text_of(a.at("stage")).c_str(),
                  text_of(a.at("attempt")).c_str(),
                  a.at("outcome").is_null() ? "running" : text_of(a.at("outcome")).c_str(),
                  secs, a.at("provider").is_null() ? "-" : text_of(a.at("provider")).c_str(),
                  text_of(a.at("worker_id")).c_str());
    }
  }
}

/// "a,b,c" from an array of strings.
std::string joined(const json::array& xs) {
  std::string out;
  for (auto& x : xs) {
    if (!out.empty())
      out += ',';
    out += text_of(x);
  }
  return out;
}

void print_status(const json::object& s) {
  static const char* states[] = {"blocked", "scheduled", "ready",   "running",
                                 "done",    "failed",    "skipped", "cancelled"};
  std::printf("%-12s", "stage");
  for (auto st : states)
    std::printf(" %9s", st);
  std::printf("\n");
  for (auto& [stage, counts] : s.at("stages").as_object()) {
    std::printf("%-12s", std::string{stage}.c_str());
    for (auto st : states) {
      auto* v = counts.as_object().if_contains(st);
      std::printf(" %9lld", v ? static_cast<long long>(v->as_int64()) : 0LL);
    }
    std::printf("\n");
  }
  std::printf("\ntasks:");
  for (auto& [state, n] : s.at("tasks").as_object())
    std::printf(" %s %lld", std::string{state}.c_str(), static_cast<long long>(n.as_int64()));
  if (auto* c = s.if_contains("cost")) {
    auto& m = c->as_object();
    auto usd = [&](const char* key) {
      if (m.at(key).is_null())
        return std::string("none");
      char buf[48];
      std::snprintf(buf, sizeof buf, "%.2f USD", m.at(key).to_number<double>());
      return std::string(buf);
    };
    std::printf("\ncost today (%s): %s spent, %s reserved; soft budget %s, hard %s%s; "
                "%lld task(s) past their estimate",
                text_of(m.at("day")).c_str(), usd("spent").c_str(), usd("reserved").c_str(),
                usd("soft_usd").c_str(), usd("hard_usd").c_str(),
                m.at("held_back").as_bool() ? " (paid work held back)" : "",
                static_cast<long long>(m.at("overruns").as_int64()));
  }
  std::printf("\nready by channel:");
  int shown = 0;
  for (auto& c : s.at("channels").as_array()) {
    if (++shown > 20) {
      std::printf(" ...");
      break;
    }
    std::printf(" %s %lld", text_of(c.at("channel_id")).c_str(),
                static_cast<long long>(c.at("ready").as_int64()));
  }
  std::printf("\nworkers:\n");
  for (auto& wv : s.at("workers").as_array()) {
    auto& w = wv.as_object();
    auto age = w.at("heartbeat_age_s").to_number<double>();
    auto state = text_of(w.at("state"));
    std::string mark;
    if (state == "stale")
      mark = "  (stale, no heartbeat for " + duration_text(age) + ")";
    else if (state == "stopped")
      mark = "  (stopped)";
    if (w.at("config_differs").as_bool())
      mark += "  (config differs)";
    auto config = text_of(w.at("config_version"));
    if (config.empty())
      config = "-";
    if (auto& v = w.at("config_stored_version"); !v.is_null())
      config += " v" + text_of(v);
    auto pending = joined(w.at("config_restart_pending").as_array());
    if (!pending.empty())
      pending = "  restart pending: " + pending;
    auto stages = joined(w.at("stages").as_array());
    auto& http = w.at("http_address");
    std::printf("  %-32s %s pid %lld  running %lld  heartbeat %s ago  config %s  stages %s  "
                "http %s%s%s\n",
                text_of(w.at("id")).c_str(), text_of(w.at("host")).c_str(),
                static_cast<long long>(w.at("pid").as_int64()),
                static_cast<long long>(w.at("running").as_int64()), duration_text(age).c_str(),
                config.c_str(), stages.empty() ? "all" : stages.c_str(),
                http.is_null() ? "-" : text_of(http).c_str(), pending.c_str(), mark.c_str());
  }
  auto& configs = s.at("configurations").as_array();
  if (configs.size() > 1) {
    // The reference first, then the others, most used first.
    std::vector<const json::object*> order;
    for (auto& c : configs)
      order.push_back(&c.as_object());
    std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) {
      if (a->at("reference").as_bool() != b->at("reference").as_bool())
        return a->at("reference").as_bool();
      return a->at("workers").as_int64() > b->at("workers").as_int64();
    });
    std::string list;
    for (auto* c : order) {
      auto n = c->at("workers").as_int64();
      list += (list.empty() ? "" : ", ") + text_of(c->at("checksum")) + " ("
              + std::to_string(n) + (n == 1 ? " worker" : " workers")
              + (c->at("reference").as_bool() ? "" : ", marked \"config differs\"") + ")";
    }
    std::printf("warning: live workers run %zu different configurations: %s\n", configs.size(),
                list.c_str());
  }
  for (auto& u : s.at("unserved").as_array())
    std::printf("warning: %lld ready %s run(s), but no live worker serves %s\n",
                static_cast<long long>(u.at("ready").as_int64()),
                text_of(u.at("stage")).c_str(), text_of(u.at("stage")).c_str());
}

store::priority priority_arg(const std::string& s) {
  if (auto p = store::parse_priority(s))
    return *p;
  throw std::invalid_argument("priority: '" + s + "' is not one of high, normal, low");
}

/// Opens --file: stdin for "-"; refuses what cannot hold videos.
std::vector<store::new_task> read_tasks_file(const std::string& path) {
  if (path == "-") {
    auto tasks = store::parse_tasks_jsonl(std::cin);
    if (tasks.empty())
      throw std::invalid_argument("--file: standard input has no videos (it is empty)");
    return tasks;
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec || !fs::exists(st))
    throw std::invalid_argument("--file: " + path + " does not exist");
  if (fs::is_directory(st))
    throw std::invalid_argument("--file: " + path + " is a directory, not a JSONL file");
  std::ifstream file{path, std::ios::binary};
  if (!file)
    throw std::invalid_argument("--file: cannot read " + path);
  auto tasks = store::parse_tasks_jsonl(file);
  if (tasks.empty())
    throw std::invalid_argument("--file: " + path + " has no videos (it is empty)");
  return tasks;
}

} // namespace

int enqueue(const global_options& g, const enqueue_options& o) {
  std::vector<store::new_task> tasks;
  if (!o.file.empty()) {
    if (!o.channel.empty())
      throw std::invalid_argument("--file and --channel cannot be combined");
    tasks = read_tasks_file(o.file);
  } else {
    if (o.channel.empty())
      throw std::invalid_argument("enqueue: give --channel (one video) or --file (JSONL)");
    tasks.push_back(store::make_task(
      o.channel, o.priority, o.client, o.campaign, o.payload,
      o.idempotency_key.empty() ? std::nullopt : std::optional{o.idempotency_key}));
  }
  auto cfg = load_config_source(g, o.config).config;
  pg::connection conn{database_url(g, cfg.get())};
  store::store q{conn};
  config::add_estimates(*cfg, tasks);
  auto res = q.enqueue(tasks, config::pipeline_of(*cfg));
  for (auto& r : res)
    std::cout << r.task_id << (r.created ? "" : " (exists)") << "\n";
  return 0;
}

int task_show(const global_options& g, int64_t id, bool as_json) {
  pg::connection conn{database_url(g)};
  auto t = store::task_detail(conn, id);
  if (!t) {
    std::cerr << "spool: no task " << id << "\n";
    return 1;
  }
  if (as_json)
    std::cout << json::serialize(*t) << "\n";
  else
    print_task(t->as_object());
  return 0;
}

int set_priority(const global_options& g, int64_t id, const std::string& priority) {
  auto p = priority_arg(priority);
  pg::connection conn{database_url(g)};
  if (!store::store{conn}.set_priority(id, p)) {
    std::cerr << "spool: no task " << id << "\n";
    return 1;
  }
  std::cout << "task " << id << " priority " << priority << "\n";
  return 0;
}

int cancel(const global_options& g, int64_t id) {
  pg::connection conn{database_url(g)};
  if (!store::task_detail(conn, id)) {
    std::cerr << "spool: no task " << id << "\n";
    return 1;
  }
  auto runs = store::store{conn}.cancel(id);
  size_t running = 0;
  for (auto& r : runs)
    running += r.was_running;
  std::cout << "task " << id << " cancelled: " << runs.size() << " stage run(s), " << running
            << " of them running (told to stop)\n";
  return 0;
}

std::string cli_user() {
  const char* u = std::getenv("USER");
  if (u == nullptr || *u == '\0') {
    const passwd* pw = ::getpwuid(::getuid());
    u = pw != nullptr ? pw->pw_name : "unknown";
  }
  return std::string{"cli:"} + u;
}

namespace {

/// Prints the outcome of an approval decision; the exit code.
int decision_result(int64_t id, const std::string& result, const char* done) {
  if (result == "not_found") {
    std::cerr << "spool: no task " << id << "\n";
    return 1;
  }
  if (result == "finished") {
    std::cerr << "spool: task " << id << " has finished: nothing to decide\n";
    return 1;
  }
  if (result == "already_approved") {
    std::cout << "task " << id << " was approved already\n";
    return 0;
  }
  std::cout << "task " << id << " " << done << "\n";
  return 0;
}

} // namespace

int approve(const global_options& g, int64_t id, const std::string& note) {
  if (note.size() > 2000)
    throw std::invalid_argument("--note: at most 2000 bytes, got " + std::to_string(note.size()));
  pg::connection conn{database_url(g)};
  return decision_result(id, store::store{conn}.approve(id, cli_user(), note),
                         "approved: its gated stages start now");
}

int reject(const global_options& g, int64_t id, const std::string& reason) {
  if (reason.empty())
    throw std::invalid_argument("--reason: must not be empty");
  if (reason.size() > 2000)
    throw std::invalid_argument("--reason: at most 2000 bytes, got "
                                + std::to_string(reason.size()));
  pg::connection conn{database_url(g)};
  return decision_result(id, store::store{conn}.reject(id, cli_user(), reason),
                         "rejected and cancelled");
}

int status(const global_options& g, bool as_json) {
  pg::connection conn{database_url(g)};
  auto s = store::queue_status(conn);
  if (as_json)
    std::cout << json::serialize(s) << "\n";
  else
    print_status(s.as_object());
  return 0;
}

} // namespace spool::cli
