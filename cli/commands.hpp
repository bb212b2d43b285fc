#pragma once
// The spool command line. cli/main.cpp is the only file that knows CLI11: it
// declares every subcommand and option, fills the plain option structs below,
// and calls the matching function. Each function returns the exit code and
// throws for errors, which main() turns into one line:
//   std::invalid_argument, store::input_error -> exit 2 (bad input)
//   anything else (pg::error, migration_error) -> exit 1
// cli/ sits on top: it uses runtime/ (no CAF) and actors/ (through
// actors/worker.hpp, which has no CAF in it either).

#include "runtime/store/store.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace spool::config {
struct snapshot;
}

namespace spool::cli {

// -- options every subcommand shares -------------------------------------------

struct global_options {
  /// trace, debug, info, warn, error, critical or off. Defaults to info.
  std::string log_level = "info";
  /// text, or json (one object a line). Defaults to text.
  std::string log_format = "text";
  /// --database-url: wins over every other source (see database_url).
  std::optional<std::string> database_url;
};

// -- which database -------------------------------------------------------------

/// Where a database URL came from.
enum class url_source { option, environment, config, managed };

/// "--database-url", "SPOOL_DATABASE_URL", "the config's database_url" or
/// "the managed local cluster".
const char* to_string(url_source s) noexcept;

/// The one rule every subcommand follows: --database-url, then
/// $SPOOL_DATABASE_URL (when set and non-empty), then the config's
/// database_url (when the command has a config and it is non-empty), then
/// the managed local cluster, started on demand. Logs at debug level which
/// source it used, with the password redacted. Throws std::invalid_argument
/// for an empty --database-url.
std::string database_url(const global_options& g, const config::snapshot* cfg = nullptr);

/// The same choice without side effects (the managed cluster is neither
/// started nor asked for its URL: `url` is empty for it).
struct url_choice {
  url_source source = url_source::managed;
  std::string url;
};
url_choice choose_database_url(const global_options& g, const config::snapshot* cfg,
                               const char* env);

// -- config helpers ------------------------------------------------------------

/// `path` as given when it exists, else relative to the Spool home (so the
/// shipped config/spool.json is found from any directory).
std::string resolve_config_path(const std::string& path);
/// Loads and validates a config file; throws std::invalid_argument listing
/// every problem as "path: message".
std::shared_ptr<const config::snapshot> load_config(const std::string& path);
/// The value of --config that means "the newest configuration stored by
/// `spool config push`" rather than a file (a file named db: ./db).
inline constexpr const char* stored_config_source = "db";

/// A configuration and where it came from.
struct loaded_config {
  std::shared_ptr<const config::snapshot> config;
  /// The file's absolute path, or "db".
  std::string source;
  /// The stored version it is; 0 for a file.
  int64_t stored_version = 0;
};

/// What every --config option accepts: a file (as load_config reads it), or
/// "db": the newest stored version, read from database_url(g) (a stored
/// configuration never names the database) and validated as `spool config
/// push` validates. Throws std::invalid_argument when the file or the stored
/// version is invalid, or nothing is stored.
loaded_config load_config_source(const global_options& g, const std::string& path);

/// The config's data_dir made absolute (against the working directory) and
/// created.
std::string data_dir_for(const config::snapshot& cfg);

// -- spool db start|stop|status|url ----------------------------------------------

int db_start();
int db_stop();
/// Exit 0 when the cluster runs, 3 when it does not.
int db_status();
/// Prints the URL the other commands would use.
int db_url(const global_options& g);

// -- spool migrate ----------------------------------------------------------------

struct migrate_options {
  /// Empty: the migrations compiled into the binary.
  std::string dir;
  /// up: stop after this version; -1 for all.
  int64_t to = -1;
  /// down: how many to revert.
  int64_t steps = 1;
};
int migrate_up(const global_options& g, const migrate_options& o);
int migrate_down(const global_options& g, const migrate_options& o);
int migrate_status(const global_options& g, const migrate_options& o);

// -- spool config check|push|history|show|rollback ----------------------------------

int config_check(const std::string& file);
/// Validates FILE (as config check, and without database_url) and stores it
/// as the newest version unless that has the same checksum already.
int config_push(const global_options& g, const std::string& file, const std::string& note);
/// Newest first, at most `limit` (1..1000).
int config_history(const global_options& g, int limit);
/// Prints a stored version's content as pushed; the newest when `version`
/// is nullopt.
int config_show(const global_options& g, std::optional<int64_t> version);
/// Stores `version`'s content again as the newest version (re-validated).
int config_rollback(const global_options& g, int64_t version);

// -- queue commands ------------------------------------------------------------------

struct enqueue_options {
  std::string config = "config/spool.json";
  std::string channel;
  std::string priority = "normal";
  std::string client;
  std::string campaign;
  std::string payload = "{}";
  std::string idempotency_key;
  /// JSONL file, or "-" for stdin; empty: one video from the flags.
  std::string file;
};
int enqueue(const global_options& g, const enqueue_options& o);

int task_show(const global_options& g, int64_t id, bool json);
int set_priority(const global_options& g, int64_t id, const std::string& priority);
int cancel(const global_options& g, int64_t id);
/// Each provider's limits, calls in flight, tokens, quota, pause and
/// breaker state, and its last events.
int providers(const global_options& g, bool as_json);

// -- spool cost estimate|report ---------------------------------------------------

/// Prints the estimate of a task with `payload` (a JSON object) under the
/// pipeline of `config` (a file, or db), stage by stage.
int cost_estimate(const global_options& g, const std::string& config, const std::string& payload,
                  bool as_json);
/// Prints the spend of budget day `day` ("YYYY-MM-DD"; empty: today) by
/// `by` ("", client, campaign, provider or stage), with estimates against
/// actual costs of the day's tasks.
int cost_report(const global_options& g, const std::string& day, const std::string& by,
                bool as_json);
int status(const global_options& g, bool json);
/// The approval gate: approve or reject (cancel, with a reason) a task.
int approve(const global_options& g, int64_t id, const std::string& note);
int reject(const global_options& g, int64_t id, const std::string& reason);

// -- spool run and spool demo ---------------------------------------------------------

struct run_options {
  std::string config = "config/spool.json";
  bool exit_when_idle = false;
  /// Re-read a config file when it changes (SIGHUP re-reads it anyway).
  bool watch = true;
  /// Overrides http.listen; empty: the config's.
  std::string http;
  /// Sets http.cluster_metrics.
  bool cluster_metrics = false;
  /// Also serve the client API and status page on this address (empty:
  /// not).
  std::string api;
};
int run(const global_options& g, const run_options& o);

/// Where a worker serves its endpoint instead of http.listen: `flag`
/// (--http) when given, else $SPOOL_HTTP when set, else nullopt. Throws
/// std::invalid_argument naming the source of a bad address.
std::optional<std::string> http_listen_override(const std::string& flag);

struct serve_options {
  std::string config = "config/spool.json";
  /// Overrides api.listen.
  std::string http;
};
/// Who runs this command, as recorded with what it decides or sets:
/// "cli:<login>".
std::string cli_user();

/// The client API until SIGINT or SIGTERM.
int serve(const global_options& g, const serve_options& o);

/// The client API and status page running in this process (spool serve,
/// and spool demo beside its worker) until stop() or destruction.
class api_server {
public:
  /// Starts listening on `listen`; throws std::invalid_argument for a bad
  /// address or an open API off loopback, std::runtime_error when it
  /// cannot listen.
  /// `data_dir`: where stage programs write (job files are served from
  /// it); empty for the config's.
  api_server(const std::string& database_url, std::shared_ptr<const config::snapshot> cfg,
             const std::string& listen, const std::string& data_dir = {});
  ~api_server();
  api_server(const api_server&) = delete;
  api_server& operator=(const api_server&) = delete;
  std::string address() const;
  /// No API token existed at start: requests need none (loopback only).
  bool open() const noexcept;
  void stop();

private:
  struct parts;
  std::unique_ptr<parts> p_;
};

struct token_options {
  std::string client;
  bool admin = false;
  std::string name;
};
int token_create(const global_options& g, const token_options& o);
int token_revoke(const global_options& g, int64_t id);
int token_list(const global_options& g, bool json);

struct context_options {
  std::string id;     // the client (brand) or campaign
  std::string client; // campaign: the client it belongs to
  std::string json;
  std::string file;
};
/// Brand guidelines per client, briefs per campaign.
int brand_set(const global_options& g, const context_options& o);
int brand_show(const global_options& g, const std::string& client);
int campaign_set(const global_options& g, const context_options& o);
int campaign_show(const global_options& g, const std::string& campaign);

struct exporter_options {
  std::string config = "config/spool.json";
  std::string http = "127.0.0.1:9463";
};
/// Serves the cluster-wide metrics (and /healthz, /readyz) until SIGINT or
/// SIGTERM, without running work.
int exporter(const global_options& g, const exporter_options& o);

struct demo_options {
  std::string config = "config/demo.json";
  int videos = 24;
  int channels = 4;
  bool simulate = false;
  bool keep = false;
  /// Wait for a person to approve (or reject) each video at the approval
  /// gate instead of approving at once.
  bool review = false;
  /// Where the status page and client API listen: empty for the config's
  /// api.listen, "off" for nowhere.
  std::string page;
  /// Empty: the config's data_dir.
  std::string data_dir;
};
int demo(const global_options& g, const demo_options& o);

} // namespace spool::cli
