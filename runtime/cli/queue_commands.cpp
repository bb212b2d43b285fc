// spool enqueue | task show | priority | cancel | status

#include "runtime/cli/commands.hpp"
#include "runtime/config/config.hpp"
#include "runtime/local_db.hpp"
#include "runtime/pg/connection.hpp"
#include "runtime/store/inspect.hpp"
#include "runtime/store/task_input.hpp"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>

namespace spool::cli {

namespace json = boost::json;

namespace {

struct enqueue_options {
  std::string config = "config/spool.json";
  std::string channel;
  std::string priority = "normal";
  std::string client;
  std::string campaign;
  std::string payload = "{}";
  std::string idempotency_key;
  std::string file;
};

int enqueue(const enqueue_options& o) {
  std::vector<store::new_task> tasks;
  if (!o.file.empty()) {
    if (!o.channel.empty())
      throw std::invalid_argument("--file and --channel cannot be combined");
    std::ifstream file;
    std::istream* in = &std::cin;
    if (o.file != "-") {
      file.open(o.file);
      if (!file)
        throw std::invalid_argument("--file: cannot read " + o.file);
      in = &file;
    }
    tasks = store::parse_tasks_jsonl(*in);
  } else {
    if (o.channel.empty())
      throw std::invalid_argument("enqueue: give --channel (one video) or --file (JSONL)");
    tasks.push_back(store::make_task(
      o.channel, o.priority, o.client, o.campaign, o.payload,
      o.idempotency_key.empty() ? std::nullopt : std::optional{o.idempotency_key}));
  }
  auto cfg = load_config(o.config);
  pg::connection conn{resolve_database_url()};
  store::store q{conn};
  auto res = q.enqueue(tasks, pipeline_of(*cfg));
  for (auto& r : res)
    std::cout << r.task_id << (r.created ? "" : " (exists)") << "\n";
  return 0;
}

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

void print_task(const json::object& t) {
  std::printf("task %s  %s  channel %s  priority %s\n", text_of(t.at("id")).c_str(),
              text_of(t.at("state")).c_str(), text_of(t.at("channel_id")).c_str(),
              text_of(t.at("priority")).c_str());
  std::printf("  client %s  campaign %s  cost %s (estimated %s)  retries %s\n",
              text_of(t.at("client_id")).c_str(), text_of(t.at("campaign_id")).c_str(),
              text_of(t.at("actual_cost")).c_str(), text_of(t.at("estimated_cost")).c_str(),
              text_of(t.at("retry_count")).c_str());
  if (!t.at("video_url").is_null())
    std::printf("  video %s\n", text_of(t.at("video_url")).c_str());
  if (!t.at("error_message").is_null())
    std::printf("  error %s\n", text_of(t.at("error_message")).c_str());
  std::printf("  payload %s\n", text_of(t.at("payload")).c_str());
  std::printf("\n  %-12s %-10s %7s %6s  %s\n", "stage", "state", "attempt", "fails", "detail");
  for (auto& rv : t.at("stage_runs").as_array()) {
    auto& r = rv.as_object();
    std::string detail;
    if (!r.at("error_class").is_null())
      detail = text_of(r.at("error_class")) + ": " + text_of(r.at("error_message"));
    else if (!r.at("lease_owner").is_null())
      detail = "held by " + text_of(r.at("lease_owner"));
    else if (!r.at("output").is_null())
      detail = text_of(r.at("output"));
    if (detail.size() > 100)
      detail = detail.substr(0, 97) + "...";
    std::printf("  %-12s %-10s %7s %6s  %s\n", text_of(r.at("stage")).c_str(),
                text_of(r.at("state")).c_str(), text_of(r.at("attempt")).c_str(),
                text_of(r.at("failed_attempts")).c_str(), detail.c_str());
  }
  auto& attempts = t.at("attempts").as_array();
  if (!attempts.empty()) {
    std::printf("\n  %-12s %7s %-10s %8s  %s\n", "stage", "attempt", "outcome", "seconds",
                "worker");
    for (auto& av : attempts) {
      auto& a = av.as_object();
      char secs[32];
      std::snprintf(secs, sizeof secs, "%.2f", a.at("seconds").to_number<double>());
      std::printf("  %-12s %7s %-10s %8s  %s\n", text_of(a.at("stage")).c_str(),
                  text_of(a.at("attempt")).c_str(),
                  a.at("outcome").is_null() ? "running" : text_of(a.at("outcome")).c_str(),
                  secs, text_of(a.at("worker_id")).c_str());
    }
  }
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
    std::printf("  %-32s %s pid %lld  running %lld  heartbeat %.1fs ago%s  config %s\n",
                text_of(w.at("id")).c_str(), text_of(w.at("host")).c_str(),
                static_cast<long long>(w.at("pid").as_int64()),
                static_cast<long long>(w.at("running").as_int64()),
                w.at("heartbeat_age_s").to_number<double>(),
                w.at("stopped").as_bool() ? " (stopped)" : "",
                text_of(w.at("config_version")).c_str());
  }
}

store::priority priority_arg(const std::string& s) {
  if (auto p = store::parse_priority(s))
    return *p;
  throw std::invalid_argument("priority: '" + s + "' is not one of high, normal, low");
}

} // namespace

void add_queue_commands(CLI::App& app, context& ctx) {
  auto eo = std::make_shared<enqueue_options>();
  auto enq = app.add_subcommand("enqueue", "Queue videos: one from flags, or many from JSONL");
  enq->add_option("--config", eo->config, "Pipeline config (stages)")->capture_default_str();
  enq->add_option("--channel", eo->channel, "Channel id (e.g. UCxyz or @studio)");
  enq->add_option("--priority", eo->priority, "high, normal or low")->capture_default_str();
  enq->add_option("--client", eo->client, "Client id");
  enq->add_option("--campaign", eo->campaign, "Campaign id");
  enq->add_option("--payload", eo->payload, "Payload: a JSON object")->capture_default_str();
  enq->add_option("--idempotency-key", eo->idempotency_key,
                  "Enqueueing the same key again returns the existing task");
  enq->add_option("--file", eo->file,
                  "JSONL file (one video a line: channel_id, priority, client_id, campaign_id, "
                  "payload, idempotency_key, estimated_cost); - for stdin");
  enq->callback([&ctx, eo] { ctx.action = [eo] { return enqueue(*eo); }; });

  auto task = app.add_subcommand("task", "Inspect a task");
  task->require_subcommand(1);
  auto show = task->add_subcommand("show", "A task with every stage run and attempt");
  auto show_id = std::make_shared<int64_t>(0);
  auto show_json = std::make_shared<bool>(false);
  show->add_option("ID", *show_id, "Task id")->required();
  show->add_flag("--json", *show_json, "Print JSON");
  show->callback([&ctx, show_id, show_json] {
    ctx.action = [show_id, show_json] {
      pg::connection conn{resolve_database_url()};
      auto t = store::task_detail(conn, *show_id);
      if (!t) {
        std::cerr << "spool: no task " << *show_id << "\n";
        return 1;
      }
      if (*show_json)
        std::cout << json::serialize(*t) << "\n";
      else
        print_task(t->as_object());
      return 0;
    };
  });

  auto prio = app.add_subcommand("priority", "Change a task's priority (unclaimed work follows)");
  auto prio_id = std::make_shared<int64_t>(0);
  auto prio_value = std::make_shared<std::string>();
  prio->add_option("ID", *prio_id, "Task id")->required();
  prio->add_option("PRIORITY", *prio_value, "high, normal or low")->required();
  prio->callback([&ctx, prio_id, prio_value] {
    ctx.action = [prio_id, prio_value] {
      auto p = priority_arg(*prio_value);
      pg::connection conn{resolve_database_url()};
      if (!store::store{conn}.set_priority(*prio_id, p)) {
        std::cerr << "spool: no task " << *prio_id << "\n";
        return 1;
      }
      std::cout << "task " << *prio_id << " priority " << *prio_value << "\n";
      return 0;
    };
  });

  auto cancel = app.add_subcommand("cancel", "Cancel a task; running stages are told to stop");
  auto cancel_id = std::make_shared<int64_t>(0);
  cancel->add_option("ID", *cancel_id, "Task id")->required();
  cancel->callback([&ctx, cancel_id] {
    ctx.action = [cancel_id] {
      pg::connection conn{resolve_database_url()};
      if (!store::task_detail(conn, *cancel_id)) {
        std::cerr << "spool: no task " << *cancel_id << "\n";
        return 1;
      }
      auto runs = store::store{conn}.cancel(*cancel_id);
      size_t running = 0;
      for (auto& r : runs)
        running += r.was_running;
      std::cout << "task " << *cancel_id << " cancelled: " << runs.size()
                << " stage run(s), " << running << " of them running (told to stop)\n";
      return 0;
    };
  });

  auto status = app.add_subcommand("status", "Queue depth by stage and state, channels, workers");
  auto status_json = std::make_shared<bool>(false);
  status->add_flag("--json", *status_json, "Print JSON");
  status->callback([&ctx, status_json] {
    ctx.action = [status_json] {
      pg::connection conn{resolve_database_url()};
      auto s = store::queue_status(conn);
      if (*status_json)
        std::cout << json::serialize(s) << "\n";
      else
        print_status(s.as_object());
      return 0;
    };
  });
}

} // namespace spool::cli
