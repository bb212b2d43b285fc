// spool: the one binary. This is the only file that includes CLI11 (the
// heaviest header we use): it declares every subcommand and its options into
// the plain option structs of cli/commands.hpp and runs the chosen command.

#include "cli/commands.hpp"
#include "runtime/logging.hpp"
#include "runtime/store/task_input.hpp"

#include <CLI/CLI.hpp>

#include <functional>
#include <optional>
#include <iostream>

namespace {

using namespace spool;
using namespace spool::cli;

/// What the chosen subcommand does; returns the exit code.
using action = std::function<int()>;

/// Stores `fn` as the action when `sub` is the subcommand given.
void on_run(CLI::App* sub, action& slot, action fn) {
  sub->callback([&slot, fn = std::move(fn)] { slot = fn; });
}

void add_db_commands(CLI::App& app, action& act, const global_options& g) {
  auto db = app.add_subcommand("db", "Manage the local PostgreSQL cluster under .spool/pg");
  db->require_subcommand(1);
  on_run(db->add_subcommand("start", "Initialize (first time) and start the cluster; idempotent"),
         act, db_start);
  on_run(db->add_subcommand("stop", "Stop the cluster (fast shutdown)"), act, db_stop);
  on_run(db->add_subcommand("status", "Say whether the cluster runs, where, and its URL"), act,
         db_status);
  on_run(db->add_subcommand("url", "Print the libpq URL of the database commands use"), act,
         [&g] { return db_url(g); });
}

void add_migrate_commands(CLI::App& app, action& act, const global_options& g) {
  auto o = std::make_shared<migrate_options>();
  auto mig = app.add_subcommand("migrate", "Apply, revert or list schema migrations");
  mig->require_subcommand(1);
  mig->add_option("--dir", o->dir,
                  "Read migrations from this directory instead of the built-in set");
  auto up = mig->add_subcommand("up", "Apply pending migrations");
  up->add_option("--to", o->to, "Stop after this version")->check(CLI::NonNegativeNumber);
  on_run(up, act, [&g, o] { return migrate_up(g, *o); });
  auto down = mig->add_subcommand("down", "Revert the last applied migrations");
  down->add_option("--steps", o->steps, "How many to revert (default 1)")
    ->check(CLI::PositiveNumber);
  on_run(down, act, [&g, o] { return migrate_down(g, *o); });
  on_run(mig->add_subcommand("status", "List migrations and whether each is applied"), act,
         [&g, o] { return migrate_status(g, *o); });
}

void add_config_commands(CLI::App& app, action& act, const global_options& g) {
  auto cfg = app.add_subcommand("config", "Validate configuration files; store versions of "
                                          "one in the database for workers to follow");
  cfg->require_subcommand(1);
  auto check = cfg->add_subcommand("check", "Validate a whole config file; print every problem");
  auto file = std::make_shared<std::string>();
  check->add_option("FILE", *file, "The JSON config file")->required();
  on_run(check, act, [file] { return config_check(*file); });

  auto push = cfg->add_subcommand(
    "push", "Validate a config file and store it as the newest version (workers running "
            "--config db apply it); nothing is stored when it is unchanged");
  auto push_file = std::make_shared<std::string>();
  auto note = std::make_shared<std::string>();
  push->add_option("FILE", *push_file, "The JSON config file (without database_url)")
    ->required();
  push->add_option("--note", *note, "Why, one line (shown by config history)");
  on_run(push, act, [&g, push_file, note] { return config_push(g, *push_file, *note); });

  auto history = cfg->add_subcommand("history", "Stored versions, newest first");
  auto limit = std::make_shared<int>(20);
  history->add_option("--limit", *limit, "At most this many (1..1000)")->capture_default_str();
  on_run(history, act, [&g, limit] { return config_history(g, *limit); });

  auto show = cfg->add_subcommand("show", "Print a stored version as it was pushed");
  auto show_version = std::make_shared<std::optional<int64_t>>();
  show->add_option("VERSION", *show_version, "Version number (default: the newest)");
  on_run(show, act, [&g, show_version] { return config_show(g, *show_version); });

  auto rollback = cfg->add_subcommand(
    "rollback", "Store an earlier version again as the newest (validated first)");
  auto rollback_version = std::make_shared<int64_t>(0);
  rollback->add_option("VERSION", *rollback_version, "Version number to go back to")
    ->required();
  on_run(rollback, act,
         [&g, rollback_version] { return config_rollback(g, *rollback_version); });
}

void add_queue_commands(CLI::App& app, action& act, const global_options& g) {
  auto eo = std::make_shared<enqueue_options>();
  auto enq = app.add_subcommand("enqueue", "Queue videos: one from flags, or many from JSONL");
  enq->add_option("--config", eo->config,
                  "Pipeline config (stages): a file, or db for the newest stored version")->capture_default_str();
  enq->add_option("--channel", eo->channel, "Channel id (e.g. UCxyz or @studio)");
  enq->add_option("--priority", eo->priority, "high, normal or low")->capture_default_str();
  enq->add_option("--client", eo->client, "Client id");
  enq->add_option("--campaign", eo->campaign, "Campaign id");
  enq->add_option("--payload", eo->payload, "Payload: a JSON object (at most 1 MiB)")
    ->capture_default_str();
  enq->add_option("--idempotency-key", eo->idempotency_key,
                  "Enqueueing the same key again returns the existing task");
  enq->add_option("--file", eo->file,
                  "JSONL file (one video a line: channel_id, priority, client_id, campaign_id, "
                  "payload, idempotency_key, estimated_cost); - for stdin");
  on_run(enq, act, [&g, eo] { return enqueue(g, *eo); });

  auto task = app.add_subcommand("task", "Inspect a task");
  task->require_subcommand(1);
  auto show = task->add_subcommand("show", "A task with every stage run and attempt");
  auto show_id = std::make_shared<int64_t>(0);
  auto show_json = std::make_shared<bool>(false);
  show->add_option("ID", *show_id, "Task id")->required();
  show->add_flag("--json", *show_json, "Print JSON");
  on_run(show, act, [&g, show_id, show_json] { return task_show(g, *show_id, *show_json); });

  auto prio = app.add_subcommand("priority", "Change a task's priority (unclaimed work follows)");
  auto prio_id = std::make_shared<int64_t>(0);
  auto prio_value = std::make_shared<std::string>();
  prio->add_option("ID", *prio_id, "Task id")->required();
  prio->add_option("PRIORITY", *prio_value, "high, normal or low")->required();
  on_run(prio, act, [&g, prio_id, prio_value] { return set_priority(g, *prio_id, *prio_value); });

  auto can = app.add_subcommand("cancel", "Cancel a task; running stages are told to stop");
  auto cancel_id = std::make_shared<int64_t>(0);
  can->add_option("ID", *cancel_id, "Task id")->required();
  on_run(can, act, [&g, cancel_id] { return cancel(g, *cancel_id); });

  auto ap = app.add_subcommand("approve", "Approve a task: its stages behind the approval gate "
                                          "start");
  auto approve_id = std::make_shared<int64_t>(0);
  auto approve_note = std::make_shared<std::string>();
  ap->add_option("ID", *approve_id, "Task id")->required();
  ap->add_option("--note", *approve_note, "Recorded with the approval");
  on_run(ap, act, [&g, approve_id, approve_note] { return approve(g, *approve_id, *approve_note); });

  auto rj = app.add_subcommand("reject", "Reject a task: it is cancelled with the reason");
  auto reject_id = std::make_shared<int64_t>(0);
  auto reject_reason = std::make_shared<std::string>();
  rj->add_option("ID", *reject_id, "Task id")->required();
  rj->add_option("--reason", *reject_reason, "Why (recorded as the task's error)")->required();
  on_run(rj, act, [&g, reject_id, reject_reason] { return reject(g, *reject_id, *reject_reason); });

  auto st = app.add_subcommand("status", "Queue depth by stage and state, channels, workers");
  auto status_json = std::make_shared<bool>(false);
  st->add_flag("--json", *status_json, "Print JSON");
  on_run(st, act, [&g, status_json] { return status(g, *status_json); });

  auto pr = app.add_subcommand("providers",
                               "Each provider's limits and usage across all workers: calls in "
                               "flight, tokens, quota, pause, breaker, last events");
  auto providers_json = std::make_shared<bool>(false);
  pr->add_flag("--json", *providers_json, "Print JSON");
  on_run(pr, act, [&g, providers_json] { return providers(g, *providers_json); });
}

void add_cost_commands(CLI::App& app, action& act, const global_options& g) {
  auto cost = app.add_subcommand("cost", "Cost estimates and the daily spend report");
  cost->require_subcommand(1);
  auto est = cost->add_subcommand("estimate",
                                  "What a task with this payload is estimated to cost, stage by "
                                  "stage, under the configured prices");
  auto est_config = std::make_shared<std::string>("config/spool.json");
  auto est_payload = std::make_shared<std::string>();
  auto est_json = std::make_shared<bool>(false);
  est->add_option("--config", *est_config,
                  "Pipeline config (stages and prices): a file, or db for the newest stored "
                  "version")->capture_default_str();
  est->add_option("--payload", *est_payload, "The task's payload: a JSON object")->required();
  est->add_flag("--json", *est_json, "Print JSON");
  on_run(est, act, [&g, est_config, est_payload, est_json] {
    return cost_estimate(g, *est_config, *est_payload, *est_json);
  });
  auto rep = cost->add_subcommand("report", "Spend of a budget day, with estimates against actual "
                                            "costs of the day's tasks");
  auto rep_day = std::make_shared<std::string>();
  auto rep_by = std::make_shared<std::string>();
  auto rep_json = std::make_shared<bool>(false);
  rep->add_option("--day", *rep_day, "Budget day YYYY-MM-DD (default: today)");
  rep->add_option("--by", *rep_by, "client, campaign, provider or stage (default: the total)")
    ->check(CLI::IsMember({"client", "campaign", "provider", "stage"}));
  rep->add_flag("--json", *rep_json, "Print JSON");
  on_run(rep, act, [&g, rep_day, rep_by, rep_json] {
    return cost_report(g, *rep_day, *rep_by, *rep_json);
  });
}

void add_run_command(CLI::App& app, action& act, const global_options& g) {
  auto o = std::make_shared<run_options>();
  auto r = app.add_subcommand("run", "Run a worker: claim and execute stage runs");
  r->add_option("--config", o->config,
                "Pipeline and worker config: a file (reloaded when it changes), or db for the "
                "newest stored version (reloaded on each push)")->capture_default_str();
  r->add_flag("--exit-when-idle", o->exit_when_idle,
              "Exit 0 once no work is ready, running or waiting on a retry");
  r->add_flag("!--no-watch", o->watch,
              "Do not watch the config file; re-read it on SIGHUP only");
  r->add_option("--http", o->http,
                "Serve /metrics, /healthz and /readyz on host:port (port 0: any free one), or "
                "off; overrides $SPOOL_HTTP, which overrides http.listen");
  r->add_flag("--cluster-metrics", o->cluster_metrics,
              "Also serve the cluster-wide metrics from the database (one process per "
              "cluster should)");
  r->add_option("--api", o->api,
                "Also serve the client API and status page (as spool serve) on host:port");
  on_run(r, act, [&g, o] { return run(g, *o); });
  auto e = std::make_shared<exporter_options>();
  auto x = app.add_subcommand("exporter", "Serve the cluster-wide metrics (queue depth, task "
                                          "states, providers, budgets) for Prometheus, without "
                                          "running work");
  x->add_option("--config", e->config, "Config (stage timeouts for stuck runs): a file or db")
    ->capture_default_str();
  x->add_option("--http", e->http, "Listen on host:port")->capture_default_str();
  on_run(x, act, [&g, e] { return exporter(g, *e); });

  auto so = std::make_shared<serve_options>();
  auto sv = app.add_subcommand("serve", "Serve the client API (jobs, approvals) under /api/v2");
  sv->add_option("--config", so->config, "Pipeline of new jobs: a file, or db")
    ->capture_default_str();
  sv->add_option("--http", so->http, "Listen on host:port (default: the config's api.listen)");
  on_run(sv, act, [&g, so] { return serve(g, *so); });

  for (bool is_brand : {true, false}) {
    auto grp = app.add_subcommand(is_brand ? "brand" : "campaign",
                                  is_brand ? "Brand guidelines of a client, given to every stage "
                                             "of its tasks"
                                           : "The brief of a campaign, given to every stage of "
                                             "its tasks");
    grp->require_subcommand(1);
    auto co = std::make_shared<context_options>();
    auto set = grp->add_subcommand("set", "Set (replace) them; tasks enqueued afterwards carry "
                                          "them");
    set->add_option(is_brand ? "CLIENT" : "CAMPAIGN", co->id, is_brand ? "Client id" : "Campaign id")
      ->required();
    if (!is_brand)
      set->add_option("--client", co->client, "The client the campaign belongs to");
    set->add_option("--json", co->json,
                    "The fields as a JSON object: text, numbers, flags or lists of them");
    set->add_option("--file", co->file, "A file holding that JSON object");
    on_run(set, act, [&g, co, is_brand] {
      return is_brand ? brand_set(g, *co) : campaign_set(g, *co);
    });
    auto show_id = std::make_shared<std::string>();
    auto sh = grp->add_subcommand("show", "Print them as JSON");
    sh->add_option(is_brand ? "CLIENT" : "CAMPAIGN", *show_id, "Id")->required();
    on_run(sh, act, [&g, show_id, is_brand] {
      return is_brand ? brand_show(g, *show_id) : campaign_show(g, *show_id);
    });
  }

  auto tok = app.add_subcommand("token", "Bearer tokens of the client API (stored hashed)");
  tok->require_subcommand(1);
  auto to = std::make_shared<token_options>();
  auto tc = tok->add_subcommand("create", "A new token, printed once");
  tc->add_option("--client", to->client, "The client whose jobs it sees and changes");
  tc->add_flag("--admin", to->admin, "A token that sees every client's jobs");
  tc->add_option("--name", to->name, "What it is for");
  on_run(tc, act, [&g, to] { return token_create(g, *to); });
  auto revoke_id = std::make_shared<int64_t>(0);
  auto tr = tok->add_subcommand("revoke", "Revoke a token (within 10 s everywhere)");
  tr->add_option("ID", *revoke_id, "Token id (spool token list)")->required();
  on_run(tr, act, [&g, revoke_id] { return token_revoke(g, *revoke_id); });
  auto list_json = std::make_shared<bool>(false);
  auto tl = tok->add_subcommand("list", "Every token: id, client, name, prefix, use");
  tl->add_flag("--json", *list_json, "As JSON");
  on_run(tl, act, [&g, list_json] { return token_list(g, *list_json); });
}

void add_demo_command(CLI::App& app, action& act, const global_options& g) {
  auto o = std::make_shared<demo_options>();
  auto d = app.add_subcommand("demo", "Make real videos through the shipped pipeline, "
                                      "with live progress");
  d->add_option("--videos", o->videos, "How many videos")->capture_default_str();
  d->add_option("--channels", o->channels, "Spread over this many channels")
    ->capture_default_str();
  d->add_flag("--simulate", o->simulate,
              "Same DAG with the simulate executor and injected failures");
  d->add_flag("--keep", o->keep, "Keep intermediate media (frames, clips, audio)");
  d->add_flag("--review", o->review,
              "Wait for spool approve / spool reject at the approval gate (the storyboard "
              "review before video_gen) instead of approving each video at once");
  d->add_option("--page", o->page,
                "Serve the status page and client API on host:port while the demo runs "
                "(default: the config's api.listen, 127.0.0.1:8080), or off");
  d->add_option("--config", o->config,
                "Pipeline config: a file, or db for the newest stored version")->capture_default_str();
  d->add_option("--data-dir", o->data_dir, "Where media goes (default: the config's)");
  on_run(d, act, [&g, o] { return demo(g, *o); });
}

/// Global options that take a value (skipped when looking for the
/// subcommand's name).
bool takes_value(const std::string& arg) {
  return arg == "--log-level" || arg == "--log-format" || arg == "--database-url";
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"Spool: a durable, rate-limit-aware runtime for media-generation "
               "pipelines on PostgreSQL",
               "spool"};
  app.require_subcommand(1);
  global_options g;
  action act;
  app.add_option("--log-level", g.log_level, "trace, debug, info, warn, error, critical or off")
    ->capture_default_str();
  app.add_option("--log-format", g.log_format, "text or json (one object a line)")
    ->capture_default_str();
  app.add_option("--database-url", g.database_url,
                 "libpq URL of the database; wins over SPOOL_DATABASE_URL, then the config's "
                 "database_url, then the managed local cluster");
  add_db_commands(app, act, g);
  add_migrate_commands(app, act, g);
  add_config_commands(app, act, g);
  add_queue_commands(app, act, g);
  add_cost_commands(app, act, g);
  add_run_command(app, act, g);
  add_demo_command(app, act, g);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::ParseError& e) {
    // Name an unknown subcommand: CLI11 only says one is required.
    std::string unknown;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (takes_value(a)) {
        ++i;
        continue;
      }
      if (a.rfind("-", 0) == 0)
        continue;
      bool known = false;
      for (auto* s : app.get_subcommands({}))
        known = known || s->check_name(a);
      if (!known)
        unknown = a;
      break;
    }
    if (!unknown.empty())
      std::cerr << "spool: unknown subcommand '" << unknown << "'\n";
    else
      std::cerr << "spool: " << e.what() << "\n";
    // Usage of the subcommand the error is about, when there is one.
    const CLI::App* sub = &app;
    for (auto* s : app.get_subcommands())
      for (sub = s; !sub->get_subcommands().empty();)
        sub = sub->get_subcommands().front();
    std::cerr << sub->help();
    return 2;
  }
  try {
    setup_logging(g.log_level, g.log_format);
    return act ? act() : 0;
  } catch (const std::invalid_argument& e) {
    std::cerr << "spool: " << e.what() << "\n";
    return 2;
  } catch (const store::input_error& e) {
    std::cerr << "spool: rejected, nothing was enqueued:\n" << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    // pg::error (with the redacted URL or SQLSTATE), migration_error, ...:
    // one clear line.
    std::cerr << "spool: " << e.what() << "\n";
    return 1;
  }
}
