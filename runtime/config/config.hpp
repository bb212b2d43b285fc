#pragma once
// Spool's configuration: plain structs for an immutable snapshot, a registry
// of typed properties that both parses and documents the JSON file, and a
// whole-file validator that reports every problem with its path.
//
// The format is documented in config/README.md. Every key is declared once
// in the registry (config.cpp) with its type, default, bounds, when a
// change takes effect (live, restart or new tasks: see change_effect), and a
// one-line description; `describe()` lists them. Defaults are also the member initializers below, so that tests can
// build a snapshot directly; a test keeps the two in agreement.
//
// Pure logic: no CAF, no database, no I/O beyond `load_file`.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/config/dag.hpp"
#include "runtime/outcome.hpp"

namespace spool::config {

// -- duration helpers ---------------------------------------------------------

/// The longest duration to_duration returns: 3650 days (about ten years),
/// far beyond every bound of the registry. Small enough that it converts to
/// nanoseconds and adds to any clock's now(), even several times over,
/// without overflow.
inline constexpr std::chrono::milliseconds max_duration{
  3650LL * 24 * 3600 * 1000};

/// Converts seconds to milliseconds, rounded to the nearest millisecond.
/// Negative and NaN give 0; values above max_duration (infinity included)
/// give max_duration. Never overflows.
std::chrono::milliseconds to_duration(double seconds) noexcept;

// -- worker -------------------------------------------------------------------

/// Settings of one worker process ("worker" in the file). Live, except the
/// database connection settings (db_* other than db_call_timeout_s), which
/// a worker applies when it opens a connection and which need a restart.
struct worker_config {
  /// Period of the lease extension and of the heartbeat log line.
  /// 0.01..3600. Defaults to 5 s.
  double heartbeat_interval_s = 5;
  /// Lease granted on claim and on every heartbeat. 0.01..86400 and more
  /// than heartbeat_interval_s. Defaults to 30 s.
  double lease_s = 30;
  /// Maximum number of stage runs claimed by one statement. 1..10000.
  /// Defaults to 100.
  int claim_batch_limit = 100;
  /// Maximum number of outcomes recorded by one statement. 1..10000.
  /// Defaults to 500.
  int record_batch_limit = 500;
  /// Time running work gets to finish on shutdown before it is cancelled.
  /// 0..86400. Defaults to 30 s.
  double shutdown_grace_s = 30;
  /// Period of the rescuer that returns runs with expired leases.
  /// 0.01..86400. Defaults to 15 s.
  double rescue_interval_s = 15;
  /// Period of the stuck-job sweep. 0.01..86400. Defaults to 3600 s.
  double stuck_sweep_interval_s = 3600;
  /// Time past a run's timeout before the sweep treats it as stuck.
  /// 0..86400. Defaults to 300 s.
  double stuck_margin_s = 300;
  /// Backstop poll period when no NOTIFY arrives. 0.01..3600. Defaults to
  /// 1 s.
  double idle_poll_s = 1;
  /// Period of the progress log line. 0.01..86400. Defaults to 30 s.
  double progress_log_interval_s = 30;

  // -- database connections (applied on connect; restart) --

  /// Server-side limit of one statement (PostgreSQL statement_timeout).
  /// 0.1..3600. Defaults to 30 s.
  double db_statement_timeout_s = 30;
  /// Server-side limit of one lock wait (PostgreSQL lock_timeout).
  /// 0.1..3600. Defaults to 10 s.
  double db_lock_timeout_s = 10;
  /// Limit of establishing one connection (libpq connect_timeout, whole
  /// seconds; libpq's minimum is 2). 2..600. Defaults to 10 s.
  int db_connect_timeout_s = 10;
  /// Idle time before the first TCP keepalive probe (libpq
  /// keepalives_idle, whole seconds). 1..7200. Defaults to 10 s.
  int db_keepalives_idle_s = 10;
  /// Time between TCP keepalive probes (libpq keepalives_interval, whole
  /// seconds). 1..600. Defaults to 5 s.
  int db_keepalives_interval_s = 5;
  /// Unanswered keepalive probes before the connection counts as dead
  /// (libpq keepalives_count). 1..100. Defaults to 3.
  int db_keepalives_count = 3;
  /// Time transmitted data may stay unacknowledged before the connection
  /// counts as dead (libpq tcp_user_timeout). 1..3600. Defaults to 30 s.
  double db_tcp_user_timeout_s = 30;
  /// Client-side deadline of one database call made by an actor. Live.
  /// 1..7200 and more than db_statement_timeout_s. Defaults to 60 s.
  double db_call_timeout_s = 60;

  std::chrono::milliseconds heartbeat_interval() const noexcept {
    return to_duration(heartbeat_interval_s);
  }
  std::chrono::milliseconds lease() const noexcept {
    return to_duration(lease_s);
  }
  std::chrono::milliseconds shutdown_grace() const noexcept {
    return to_duration(shutdown_grace_s);
  }
  std::chrono::milliseconds rescue_interval() const noexcept {
    return to_duration(rescue_interval_s);
  }
  std::chrono::milliseconds stuck_sweep_interval() const noexcept {
    return to_duration(stuck_sweep_interval_s);
  }
  std::chrono::milliseconds stuck_margin() const noexcept {
    return to_duration(stuck_margin_s);
  }
  std::chrono::milliseconds idle_poll() const noexcept {
    return to_duration(idle_poll_s);
  }
  std::chrono::milliseconds progress_log_interval() const noexcept {
    return to_duration(progress_log_interval_s);
  }
  std::chrono::milliseconds db_statement_timeout() const noexcept {
    return to_duration(db_statement_timeout_s);
  }
  std::chrono::milliseconds db_lock_timeout() const noexcept {
    return to_duration(db_lock_timeout_s);
  }
  std::chrono::milliseconds db_tcp_user_timeout() const noexcept {
    return to_duration(db_tcp_user_timeout_s);
  }
  std::chrono::milliseconds db_call_timeout() const noexcept {
    return to_duration(db_call_timeout_s);
  }

  bool operator==(const worker_config&) const = default;
};

// -- retry policy -------------------------------------------------------------

/// How a stage retries failed runs ("retry" in a stage). See retry.hpp for
/// the decision function.
struct retry_policy {
  /// Counted failures tolerated before the run fails: 3 means up to 4
  /// attempts. 0..100. Defaults to 3. Copied into each run at enqueue: a
  /// change applies to tasks enqueued after the change.
  int max_retries = 3;
  /// Backoff after the first counted failure, in seconds. 0..86400. Also
  /// the snooze for a rate-limited error that names no Retry-After.
  /// Defaults to 5.
  double base_s = 5;
  /// Growth of the backoff per counted failure. 1..100. Defaults to 3.
  double factor = 3;
  /// Random spread of each backoff as a fraction (0.2 = +-20 %). 0..1.
  /// Defaults to 0.2.
  double jitter = 0.2;
  /// Upper bound of a backoff, jitter included, in seconds. 0..86400.
  /// Defaults to 3600.
  double max_delay_s = 3600;
  /// Upper bound of one rate-limited snooze, whatever Retry-After the
  /// provider asked for, in seconds. > 0 and <= 86400. Defaults to 3600.
  double max_snooze_s = 3600;
  /// Total time one run may spend snoozed for rate limits; the snooze that
  /// would pass it fails the run instead. > 0 and <= 604800. Defaults to
  /// 86400 (a day).
  double max_snoozed_total_s = 86400;
  /// Leases a run may lose (its worker died or stalled) before it fails.
  /// Counted apart from max_retries. 0..100. Defaults to 5. Copied into each
  /// run at enqueue: a change applies to tasks enqueued after the change.
  int max_lost_leases = 5;

  bool operator==(const retry_policy&) const = default;
};

// -- executors ----------------------------------------------------------------

/// Which executor runs a stage.
enum class executor_kind {
  simulate, // seeded fake work: latency, injected errors, cost
  command,  // a program: job JSON on stdin, result JSON on stdout
};

/// Returns "simulate" or "command".
std::string_view to_string(executor_kind k) noexcept;

/// The shape of simulated latency.
enum class latency_dist {
  fixed,     // always `ms`
  uniform,   // uniform in [min_ms, max_ms]
  lognormal, // lognormal with median p50_ms and 99th percentile p99_ms
};

/// Returns "fixed", "uniform" or "lognormal".
std::string_view to_string(latency_dist d) noexcept;

/// Simulated latency; only the fields of `dist` are meaningful.
struct latency_config {
  /// Defaults to fixed.
  latency_dist dist = latency_dist::fixed;
  /// fixed: the latency. 0..3600000. Defaults to 200.
  double ms = 200;
  /// uniform: lower bound. 0..3600000. Defaults to 100.
  double min_ms = 100;
  /// uniform: upper bound. 0..3600000, >= min_ms. Defaults to 300.
  double max_ms = 300;
  /// lognormal: median. > 0 and <= 3600000. Defaults to 200.
  double p50_ms = 200;
  /// lognormal: 99th percentile. > 0 and <= 3600000, >= p50_ms.
  /// Defaults to 1000.
  double p99_ms = 1000;

  bool operator==(const latency_config&) const = default;
};

/// Probability per call of each injected error class. Each 0..1, sum <= 1.
/// All default to 0.
struct error_rates {
  double transient = 0;
  double network = 0;
  double rate_limited = 0;
  double permanent = 0;
  double timeout = 0;
  /// Probability that the stage actor itself crashes (an exception escapes
  /// it): chaos testing of supervision. The job is retried, never lost.
  double crash = 0;

  /// The probability for an error class; 0 for ok and cancelled.
  double of(outcome_kind k) const noexcept;

  /// Sum of all probabilities.
  double total() const noexcept {
    return transient + network + rate_limited + permanent + timeout + crash;
  }

  bool operator==(const error_rates&) const = default;
};

/// Settings of the simulate executor.
struct simulate_config {
  latency_config latency;
  error_rates errors;
  /// Retry-After reported with an injected rate_limited error, in seconds.
  /// 0..86400. Defaults to 2.
  double retry_after_s = 2;
  /// Cost of one call in USD. 0..10000, and at most the stage's max_cost.
  /// Defaults to 0.
  double cost = 0;
  /// Seed of the executor's random generator. Defaults to 1.
  std::uint64_t seed = 1;

  bool operator==(const simulate_config&) const = default;
};

/// Settings of the command executor.
struct command_config {
  /// Program and arguments. Required, non-empty. A relative argv[0] is
  /// resolved by the runtime, not here.
  std::vector<std::string> argv;
  /// Variables set for the program, with these values (they win over
  /// passed ones). Defaults to none.
  std::map<std::string, std::string> env;
  /// Names of the worker's environment variables the program also gets
  /// (e.g. a provider's API key), beyond the base allow list; one the
  /// worker lacks is simply absent. Defaults to none.
  std::vector<std::string> pass_env;
  /// Time between TERM and KILL when the program must stop, in seconds.
  /// 0..3600. Defaults to 5.
  double kill_grace_s = 5;

  std::chrono::milliseconds kill_grace() const noexcept {
    return to_duration(kill_grace_s);
  }

  bool operator==(const command_config&) const = default;
};

/// A stage's executor. Only the member selected by `kind` is meaningful; the
/// other keeps its defaults.
struct executor_config {
  /// Defaults to simulate.
  executor_kind kind = executor_kind::simulate;
  simulate_config simulate;
  command_config command;

  bool operator==(const executor_config&) const = default;
};

// -- providers ----------------------------------------------------------------

/// A token bucket: `per_s` calls a second on average, at most `burst` at
/// once ("rate" in a provider).
struct rate_limit {
  /// Calls a second. > 0 and <= 100000.
  double per_s = 1;
  /// Tokens the bucket holds (calls that may start at once after a quiet
  /// spell). 1..100000. Defaults to 1.
  double burst = 1;

  bool operator==(const rate_limit&) const = default;
};

/// Units a provider may use per window ("daily_quota" in a provider).
struct daily_quota {
  /// Units per window. > 0 and <= 1e12.
  double units = 0;
  /// When the window resets, "HH:MM" local time in `time_zone`. Defaults
  /// to "00:00".
  std::string reset_at = "00:00";
  /// An IANA time zone name (as PostgreSQL knows it). Defaults to "UTC".
  std::string time_zone = "UTC";
  /// Length of the window in seconds; 86400 (the default) is a day that
  /// starts at reset_at in time_zone. Other lengths (for tests, or hourly
  /// quotas) start at multiples of the length since the epoch.
  /// 1..2678400.
  double window_s = 86400;
  /// Units one call uses when units_field is empty or absent from the
  /// payload. > 0 and <= 1e6. Defaults to 1.
  double units_per_call = 1;
  /// A numeric payload field giving the units of a call (e.g. "images").
  /// Empty (the default): every call uses units_per_call.
  std::string units_field;

  bool operator==(const daily_quota&) const = default;
};

/// A circuit breaker ("breaker" in a provider).
struct breaker_config {
  /// Consecutive failed calls that open it. 1..1000. Defaults to 5.
  int consecutive_failures = 5;
  /// Failed share of the last `window` calls that opens it; 0 (the
  /// default) disables the rate rule. 0..1.
  double failure_rate = 0;
  /// Calls the failure rate is computed over. 1..1000. Defaults to 20.
  int window = 20;
  /// Seconds it stays open before probing. 0.01..86400. Defaults to 30.
  double cooldown_s = 30;
  /// Calls let through while half-open. 1..100. Defaults to 1.
  int probes = 1;

  bool operator==(const breaker_config&) const = default;
};

/// An external service whose limits hold across every worker (an element
/// of "providers"). Each limit is optional: `rate`, `daily_quota` and
/// `breaker` are objects of the file whose presence sets has_rate,
/// has_quota and has_breaker; the settings of an absent one keep their
/// struct defaults and mean nothing (canonical_json leaves them out). Every
/// key is live: workers write the limits to the database when they start
/// and on every reload.
struct provider_config {
  /// Unique name, [a-z][a-z0-9_]{0,62}. Required.
  std::string name;
  /// Calls in flight across all workers; 0 (the default) means no cap.
  /// 0..100000.
  int max_concurrent = 0;
  bool has_rate = false;
  rate_limit rate;
  bool has_quota = false;
  daily_quota quota;
  bool has_breaker = false;
  breaker_config breaker;

  bool operator==(const provider_config&) const = default;
};

// -- prices -------------------------------------------------------------------

/// One term of a stage's price model ("price", "price.instead" and
/// "price.plus" in a stage). A term costs per_call + per_unit x units, where
/// units is the product of the payload fields named in `units` (see
/// cost.hpp for how a field counts). Every key is live; a task's estimate is
/// made when it is enqueued, so a change of prices reaches tasks enqueued
/// after it.
struct price_term {
  /// The provider's model the price is for ("flux-pro"), shown in estimates
  /// and reports. Defaults to empty.
  std::string model;
  /// USD per call. 0..10000. Defaults to 0.
  double per_call = 0;
  /// USD per unit. 0..10000. Defaults to 0.
  double per_unit = 0;
  /// Payload fields whose product is the call's units ("duration_s",
  /// "variations"). Defaults to none: one unit.
  std::vector<std::string> units;
  /// A payload field that selects the term: it applies when the field is
  /// true or a non-zero number, or a non-empty string, array or object.
  /// Required in "price.instead" and "price.plus"; in "price", empty (the
  /// default) means always.
  std::string when;

  bool operator==(const price_term&) const = default;
};

// -- budgets ------------------------------------------------------------------

/// Daily spending limits across every worker ("budgets"). A day starts at
/// reset_at in time_zone. Every key is live: workers write the limits to
/// the database when they start and on every reload.
struct budget_config {
  /// Spend in a day (USD) past which a warning event fires, once a day;
  /// 0: no warning. 0..10000000. Defaults to 100.
  double soft_usd = 100;
  /// Spend in a day (USD) that no new paid work may pass: a claim reserves
  /// its runs' estimates and is refused what would take reservations plus
  /// spend past it; 0: no limit. 0..10000000. Defaults to 150.
  double hard_usd = 150;
  /// When the budget day starts, "HH:MM" local time. Defaults to "00:00".
  std::string reset_at = "00:00";
  /// IANA time zone of reset_at. Defaults to "UTC".
  std::string time_zone = "UTC";
  /// Length of a budget day in seconds: 86400 (the default) is a day from
  /// reset_at in time_zone; a shorter one (for tests) starts at multiples of
  /// its length since the epoch. 1..86400.
  double day_s = 86400;
  /// A task whose actual cost passes its estimate times this fires one
  /// cost_overrun event. 1..100. Defaults to 1.2.
  double overrun_factor = 1.2;
  /// Soft budgets of single clients (client id -> USD a day). Defaults to
  /// none.
  std::map<std::string, double> client_soft_usd;
  /// Hard budgets of single clients (client id -> USD a day), held like
  /// hard_usd. Defaults to none.
  std::map<std::string, double> client_hard_usd;

  bool operator==(const budget_config&) const = default;
};

// -- http ---------------------------------------------------------------------

/// The operators' HTTP endpoint of a worker ("http"): /metrics, /healthz and
/// /readyz. Needs a restart.
struct http_config {
  /// "host:port" to listen on ("[v6]:port" for IPv6; port 0: any free
  /// port), or "off". Defaults to "127.0.0.1:9464".
  std::string listen = "127.0.0.1:9464";
  /// Also serve the cluster-wide metrics read from the database. Exactly one
  /// scraped process of a cluster should (or `spool exporter`). Defaults to
  /// false.
  bool cluster_metrics = false;

  bool operator==(const http_config&) const = default;
};

/// The client API of `spool serve` ("api"). Needs a restart of the server.
struct api_config {
  /// "host:port" to listen on. Without any API token the server answers
  /// only on a loopback address. Defaults to "127.0.0.1:8080".
  std::string listen = "127.0.0.1:8080";
  /// Requests a second per token (per peer address when open), and the
  /// burst above it. Defaults to 50 and 100.
  double requests_per_s = 50;
  double burst = 100;
  /// The largest request body in bytes (a POST of many jobs). Defaults to
  /// 8 MiB.
  int max_request_bytes = 8 << 20;

  bool operator==(const api_config&) const = default;
};

// -- stages -------------------------------------------------------------------

/// One stage of the pipeline (an element of "stages"). Live, except what
/// the enqueue copies into each task (the stage set, `after`, `optional`,
/// retry.max_retries and retry.max_lost_leases): a change of those applies
/// to tasks enqueued after the change.
struct stage_config {
  /// Unique name, [a-z][a-z0-9_]{0,62}. Required. A stage renamed is one
  /// removed and one added: applies to tasks enqueued after the change.
  std::string name;
  /// Stages this one waits for. Defaults to none. Applies to tasks enqueued
  /// after the change.
  std::vector<std::string> after;
  /// Stage actors in this worker's pool. 1..10000. Defaults to 1.
  int max_concurrent = 1;
  /// Timeout of one run in seconds (per unit, see timeout_per).
  /// 0.001..604800. Defaults to 60.
  double timeout_s = 60;
  /// Name of a numeric payload field that scales the timeout (e.g.
  /// "images"); see effective_timeout() in retry.hpp. Empty (the default)
  /// means no scaling.
  std::string timeout_per;
  /// Upper bound of a payload-scaled timeout in seconds. 0.001..604800 and
  /// >= timeout_s. Defaults to 86400 (a day).
  double timeout_max_s = 86400;
  /// Whether the task may end partially_completed when this stage fails.
  /// Defaults to false. Applies to tasks enqueued after the change.
  bool optional = false;
  /// Whether this stage's runs wait for the task's approval (a person
  /// reviews what the stages before it made, e.g. the storyboard, before
  /// paying for this one): once its inputs are done the task is
  /// awaiting_approval until `spool approve` (or the API). Only for a stage
  /// with `after`. Defaults to false. Applies to tasks enqueued after the
  /// change.
  bool approval = false;
  /// Sanity cap of the cost one execution may report, in USD; a result
  /// above it fails its run (see exec/outcome_check.hpp). > 0 and
  /// <= 1000000. Defaults to 10000.
  double max_cost = 10000;
  /// Largest output (JSON text) one execution may report, in bytes; a
  /// larger one fails its run. 2..67108864. Defaults to 1048576 (1 MiB).
  int max_output_bytes = 1048576;
  retry_policy retry;
  executor_config executor;
  /// The provider whose limits this stage's calls count against. Empty
  /// (the default): none.
  std::string provider;
  /// A provider to use instead when `provider`'s breaker is open or its
  /// quota is spent ("fallback.provider", required in a "fallback"
  /// object). Empty (the default): none, and the file has no "fallback".
  /// Must name a provider other than `provider`, and needs `provider`.
  std::string fallback_provider;
  /// The executor of a call sent to the fallback ("fallback.executor", with
  /// the keys and rules of "executor"); only meaningful with
  /// fallback_provider. A "fallback" without "executor" gives a copy of
  /// `executor`; without "fallback" it keeps the defaults of
  /// executor_config.
  executor_config fallback_executor;
  /// The price model ("price"): absent (has_price false), the stage is free
  /// and its runs never wait for a budget.
  bool has_price = false;
  price_term price;
  /// A term used instead of `price` when its `when` field is set
  /// ("price.instead": an HD model). Only with has_price.
  bool has_price_instead = false;
  price_term price_instead;
  /// A term added to the price when its `when` field is set ("price.plus":
  /// an upscale). Only with has_price.
  bool has_price_plus = false;
  price_term price_plus;

  /// The unscaled timeout.
  std::chrono::milliseconds timeout() const noexcept {
    return to_duration(timeout_s);
  }
  /// The cap of a payload-scaled timeout.
  std::chrono::milliseconds timeout_max() const noexcept {
    return to_duration(timeout_max_s);
  }

  bool operator==(const stage_config&) const = default;
};

// -- snapshot -----------------------------------------------------------------

/// The whole effective configuration. Immutable once handed out as
/// `std::shared_ptr<const snapshot>`; a change makes a new snapshot.
struct snapshot {
  /// Where stage programs write files. Needs a restart. Defaults to
  /// ".spool/data".
  std::string data_dir = ".spool/data";
  /// libpq URL of the database; empty means "use the managed local
  /// cluster". SPOOL_DATABASE_URL wins (see effective_database_url). Needs a
  /// restart. Defaults to empty.
  std::string database_url;
  worker_config worker;
  /// Stages in file order.
  std::vector<stage_config> stages;
  /// Providers in file order ("providers"). Defaults to none.
  std::vector<provider_config> providers;
  /// Daily budgets ("budgets").
  budget_config budgets;
  /// The operators' HTTP endpoint ("http"). Needs a restart.
  http_config http;
  /// The client API of `spool serve` ("api"). Needs a restart of the server.
  api_config api;
  /// Hash of the canonical JSON (see canonical_json): equal configurations
  /// have equal versions. Set by parse/validate; not part of the hash.
  std::string version;

  /// The stage with this name, or nullptr.
  const stage_config* stage(std::string_view name) const noexcept;

  /// The provider with this name, or nullptr.
  const provider_config* provider(std::string_view name) const noexcept;

  /// The stage graph.
  dag graph() const;

  /// Stage names, each after all the stages it waits for; file order among
  /// ties. Complete for any snapshot produced by parse or validate.
  std::vector<std::string> topo_order() const;

  /// Direct downstream stages of `name` (those that wait for it), in file
  /// order.
  std::vector<std::string> dependents(std::string_view name) const;

  /// Direct upstream stages of `name` (those it waits for).
  std::vector<std::string> dependencies(std::string_view name) const;

  /// Stages that wait for nothing, in file order.
  std::vector<std::string> roots() const;

  /// Equality of the configuration; ignores `version`.
  bool operator==(const snapshot& other) const {
    return data_dir == other.data_dir && database_url == other.database_url
           && worker == other.worker && stages == other.stages
           && providers == other.providers && budgets == other.budgets
           && http == other.http && api == other.api;
  }
};

/// The URL to connect with: `env` when set and non-empty (callers pass
/// getenv("SPOOL_DATABASE_URL")), else the snapshot's database_url (which
/// may be empty: use the managed local cluster).
std::string effective_database_url(const snapshot& s, const char* env);

// -- parsing and validation ---------------------------------------------------

/// One thing wrong with a configuration.
struct problem {
  /// Where: "worker.lease_s", "stages[2].retry.factor", "stages[1].after[0]".
  /// Empty for the document as a whole (syntax errors, unreadable file).
  std::string path;
  /// What, e.g. "must be >= 1, got 0" or "unknown key".
  std::string message;

  bool operator==(const problem&) const = default;
};

/// Renders "path: message", or just the message when the path is empty.
std::string to_string(const problem& p);

/// Every problem on one line, separated by "; " (for a log line).
std::string to_string(const std::vector<problem>& problems);

/// The outcome of reading a configuration: a snapshot, or every problem.
struct load_result {
  /// Null exactly when `problems` is non-empty.
  std::shared_ptr<const snapshot> config;
  std::vector<problem> problems;

  bool ok() const noexcept {
    return config != nullptr;
  }
};

/// Parses and validates a whole configuration. JSON may contain comments and
/// trailing commas. Reports every problem found, each with its path; a
/// missing key takes its default, an unknown key is a problem.
load_result parse(std::string_view json_text);

/// Reads and parses a file. An unreadable file gives one problem with an
/// empty path whose message names the file.
load_result load_file(const std::string& path);

/// Validates a snapshot built in code (as parse would validate its file) and
/// returns a copy with its version set.
load_result validate(const snapshot& s);

/// The effective configuration as compact JSON with every key in registry
/// order, defaults included and keys of unselected variants (e.g. "argv"
/// for a simulate executor) left out. Parsing it gives an equal snapshot.
/// Contains database_url: treat it as a secret.
std::string canonical_json(const snapshot& s);

/// The "providers" array of canonical_json(s): what the database keeps of
/// the providers' limits (store::sync_providers).
std::string providers_json(const snapshot& s);

/// The "budgets" object of canonical_json(s): what the database keeps of
/// the budgets (store::sync_budgets).
std::string budgets_json(const snapshot& s);

/// FNV-1a 64 of canonical_json(s), as 16 lowercase hex digits.
std::string compute_version(const snapshot& s);

/// Names of the properties that need a restart and differ between two
/// snapshots: the keys of diff(old, next) whose effect is restart, in its
/// order (e.g. {"data_dir", "database_url",
/// "worker.db_statement_timeout_s"}). Empty when a reload can apply all of
/// `next`. (No stage or provider property needs a restart today; one would
/// be named "stages[<stage>].<key>" or "providers[<provider>].<key>".)
std::vector<std::string> restart_required(const snapshot& old,
                                          const snapshot& next);

// -- changes between snapshots ------------------------------------------------

/// When a change of a property takes effect.
enum class change_effect {
  /// A reload applies it: running jobs finish under the old value, new
  /// claims get the new one.
  live,
  /// A reload reports it ("restart required") and keeps the old value until
  /// the worker restarts.
  restart,
  /// Copied into a task when it is enqueued (the stage set and DAG,
  /// optional, retry.max_retries, retry.max_lost_leases): a change applies
  /// to tasks enqueued after it; tasks already queued keep theirs.
  new_tasks,
};

/// Returns "live", "restart" or "new tasks".
std::string_view to_string(change_effect e) noexcept;

/// One property that differs between two snapshots.
struct change {
  /// The property's dotted key as in the file, a stage's keys prefixed
  /// with "stages[<name>]." and a provider's with "providers[<name>]." (not
  /// their index): "data_dir", "worker.lease_s",
  /// "stages[video_gen].retry.factor",
  /// "stages[video_gen].executor.latency.ms",
  /// "providers[kling].rate.per_s". A stage or provider added or removed as
  /// a whole is one change keyed "stages[video_gen]" or "providers[kling]";
  /// so is an optional object added or removed as a whole:
  /// "providers[kling].rate", "stages[video_gen].fallback".
  std::string key;
  /// Compact JSON of the old and new value ("30", "\"command\"",
  /// "[\"asset_gen\"]"); for a whole stage, provider or optional object,
  /// its canonical JSON (as in canonical_json). "(none)" on the side where
  /// there is nothing: the missing side of an added or removed stage,
  /// provider or optional object, or the side where the key does not apply
  /// (a key of the executor kind or latency dist not selected there).
  std::string before;
  std::string after;
  /// The property's effect; a stage added or removed is new_tasks (each
  /// task gets one run per stage configured when it is enqueued), a
  /// provider added or removed is live.
  change_effect effect = change_effect::live;

  bool operator==(const change&) const = default;
};

/// Every leaf property that differs, in registry order (top level, worker,
/// then providers, then stages; each list in `next`'s order, each added
/// element where it stands, then the removed ones in `old`'s order).
/// Stages and providers are matched by name; a change of their order alone
/// is no change. An optional object (a provider's rate, daily_quota or
/// breaker, a stage's fallback) present on one side only is one change
/// that stands for its keys. A key is compared where it applies to
/// either side, so keys of an executor kind selected on neither side make
/// no noise; when `kind` (or latency `dist`) changes, the change lists it
/// and the keys of either variant whose values differ. Empty for equal
/// snapshots (and whenever their canonical JSON is equal up to the order
/// of stages and of providers).
std::vector<change> diff(const snapshot& old, const snapshot& next);

/// `next` with every restart-only property (data_dir, database_url,
/// worker.db_* except db_call_timeout_s, and any stage or provider key
/// marked restart, for stages and providers present in both) set back to
/// its value in `old`: what a
/// running worker applies. Keeps `next.version`. Cross-key rules are not
/// re-checked: when `next` lowers both worker.db_statement_timeout_s and
/// worker.db_call_timeout_s, the result keeps the old statement timeout
/// with the new, possibly smaller, call deadline.
snapshot keep_restart_only(const snapshot& old, const snapshot& next);

// -- registry -----------------------------------------------------------------

/// The value type of a property.
enum class property_type {
  integer,
  number,
  boolean,
  string,
  string_list,
  string_map,
  number_map,
  object,
  object_list,
};

/// Returns "int", "double", "bool", "string", "string list", "string map",
/// "object" or "object list".
std::string_view to_string(property_type t) noexcept;

/// What the registry knows about one property, for docs and the CLI.
struct property_info {
  /// Dotted path; stage properties read "stages[].retry.factor", provider
  /// properties "providers[].rate.per_s".
  std::string name;
  property_type type;
  /// The default as JSON text ("5", "\"fixed\"", "[]"); empty when the
  /// property is required or is an object.
  std::string default_text;
  /// Bounds and allowed values in words (">= 1", "0..1", "one of simulate,
  /// command", "[a-z][a-z0-9_]{0,62}, unique"); empty when unconstrained.
  std::string constraint;
  /// When the key is allowed ("executor.kind = command"); empty: always.
  std::string applies_when;
  /// Whether the key must be present (where it applies).
  bool required;
  /// Whether a change only takes effect after a restart (effect ==
  /// restart).
  bool needs_restart;
  /// When a change takes effect: live, restart, or new tasks (copied into
  /// each task at enqueue: applies to tasks enqueued after the change).
  change_effect effect = change_effect::live;
  /// One line.
  std::string description;
};

/// Every property of the file, in registry order (top level, worker, then
/// provider properties, then stage properties).
std::vector<property_info> describe();

} // namespace spool::config
