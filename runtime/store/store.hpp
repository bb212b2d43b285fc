#pragma once
// The durable queue: all SQL a worker or the CLI runs against tasks and stage
// runs lives behind this one narrow interface. Each method is one round trip
// (a server-side function from migrations/R_*.sql) on the
// connection the store was given; the caller owns threads and connections.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace spool::pg {
class connection;
}

namespace spool::store {

enum class priority { high, normal, low };
std::string_view to_string(priority p) noexcept;
/// "high", "normal" or "low"; nullopt otherwise.
std::optional<priority> parse_priority(std::string_view s) noexcept;

/// One stage as the queue sees it: its place in the DAG and its limits, which
/// are copied into its runs at enqueue.
struct pipeline_stage {
  std::string name;
  std::vector<std::string> after;
  bool optional = false;
  int max_retries = 3;
  /// Leases a run may lose (its worker died or stalled) before it fails.
  int max_lost = 5;
  /// The run waits for the task's approval once its inputs are done.
  bool approval = false;
};

/// A video to make.
struct new_task {
  std::string channel_id;
  std::string client_id;
  std::string campaign_id;
  priority prio = priority::normal;
  /// A JSON object, as text.
  std::string payload = "{}";
  /// Enqueueing the same key again returns the existing task.
  std::optional<std::string> idempotency_key;
  /// The task's estimate in USD; absent: the sum of run_estimates.
  std::optional<double> estimated_cost;
  /// Each stage run's estimate for one call, in pipeline order (see
  /// cost::estimate_task); empty: every run free.
  std::vector<double> run_estimates;
};

struct enqueued {
  int64_t task_id;
  bool created; // false: the idempotency key named an existing task
};

/// A stage run this worker now holds, with everything its executor needs.
struct claimed_run {
  int64_t run_id = 0;
  int64_t task_id = 0;
  std::string stage;
  /// The claim's attempt number: with the worker id and the lease token, it
  /// fences outcomes.
  int attempt = 0;
  /// The claim's lease token: never the same for two claims of one process
  /// (see next_lease_token), so no two executions share a fence.
  int64_t lease_token = 0;
  /// Attempts that failed so far (counted toward the retry limit). A
  /// provider saw each, so the idempotency key changes with this count.
  int failed_attempts = 0;
  /// Leases lost so far because a worker died or stalled (their own limit).
  int lost_attempts = 0;
  /// Time spent snoozed (rate limited) so far.
  std::chrono::milliseconds snoozed{0};
  /// The run's retry limit, copied from the stage's retry.max_retries when
  /// the task was enqueued (a config change applies to new tasks only).
  int max_retries = 3;
  std::string channel_id;
  std::string priority;
  std::string payload; // JSON object text
  std::string inputs;  // JSON object text: upstream stage -> its output
  /// The task's brand guidelines and campaign brief (JSON object text, see
  /// R_context.sql); empty when it has none.
  std::string context;
  /// The provider whose limits admitted this claim (the stage's provider or
  /// its fallback); empty for a claim without provider (claim()).
  std::string provider;
};

// Provider limits (providers.hpp has these types and the contracts).
struct claim_result;
struct provider_event;
struct provider_status;

/// What became of one claimed run.
enum class record_kind {
  ok,      // done: output and cost recorded; dependents may become ready
  retry,   // failed attempt; ready again after `delay` (counts toward the limit)
  snooze,  // rate limited; ready again after `delay`, no attempt counted
  release, // handed back (shutdown); ready now, no attempt counted
  fail,    // failed for good: the task fails unless the stage is optional
};

struct outcome_record {
  int64_t run_id = 0;
  int attempt = 0;
  int64_t lease_token = 0;
  record_kind kind = record_kind::ok;
  std::chrono::milliseconds delay{0};
  std::string output = "{}"; // for ok
  double cost = 0;
  std::string error_class;
  std::string message;
  /// When the execution really started and ended (microseconds since the
  /// epoch, the worker's clock); 0 when unknown (then: claim and record time).
  int64_t started_us = 0;
  int64_t finished_us = 0;

  /// An outcome of `kind` for the claim `run` (its fence copied).
  static outcome_record for_claim(const claimed_run& run, record_kind kind);
};

/// One claim a worker holds: what a heartbeat names.
struct held_claim {
  int64_t run_id = 0;
  int attempt = 0;
  int64_t lease_token = 0;
  bool operator==(const held_claim&) const = default;
  auto operator<=>(const held_claim&) const = default;
};

/// What a heartbeat learned about one claim.
struct heartbeat_note {
  enum class what {
    lost,     // named, but the database no longer attributes it to the worker
    released, // attributed to the worker but not named: handed back
  };
  what kind;
  held_claim claim;
};

struct recorded {
  int64_t run_id;
  /// False when the fence refused it: the worker no longer held the run at
  /// that attempt (lease lost, rescued, cancelled). Nothing was changed.
  bool accepted;
  /// The run's state afterwards (ready, scheduled, done, failed, ...).
  std::string state;
};

struct worker_info {
  std::string id;
  std::string host;
  int pid = 0;
  std::string config_version;
  /// The stages it serves.
  std::vector<std::string> stages;
  /// Its lease: without a heartbeat for this long it counts as stale.
  std::chrono::milliseconds lease{30'000};
  /// Where it serves /metrics ("host:port"; empty: nowhere).
  std::string http_address;
};

/// A lease token no earlier call in this process returned (1, 2, 3, ...).
/// Thread-safe.
int64_t next_lease_token() noexcept;

/// The newest token next_lease_token() has handed out (0 before the first).
/// Every token at or below it was handed out before this call.
int64_t last_lease_token() noexcept;

class store {
public:
  explicit store(pg::connection& conn) : conn_(conn) {
  }

  /// Creates tasks and their stage runs in one round trip; roots are ready at
  /// once and idle workers are woken (NOTIFY spool_wakeup).
  std::vector<enqueued> enqueue(const std::vector<new_task>& tasks,
                                const std::vector<pipeline_stage>& pipeline);

  /// Runs the hot path once inside a transaction that is rolled back: a task
  /// of two stages is enqueued, its first run claimed and recorded done (which
  /// readies the second) and the second claimed. A new session thus compiles
  /// the functions and plans their statements before the first real job waits
  /// for it (about 25 ms for the first record here). Leaves nothing behind
  /// but used sequence numbers; rolled back, it notifies no one.
  void warm_up();

  /// Claims up to `limit` ready runs of `stage` in fair order: priority,
  /// then round-robin across channels, then FIFO. Every run claimed gets the
  /// lease token `token` (0: a new one from next_lease_token()); a worker
  /// passes a fresh one per call.
  std::vector<claimed_run> claim(std::string_view stage, int limit,
                                 std::string_view worker,
                                 std::chrono::milliseconds lease,
                                 int64_t token = 0);

  // -- providers (providers.cpp; the types are in providers.hpp) --

  /// Like claim(), for a stage whose calls count against `provider`: claims
  /// only what the provider's limits admit now (concurrency, token bucket,
  /// quota, breaker, pause), across every worker; with `fallback` (may be
  /// empty) the runs the primary cannot take because its breaker is open or
  /// its quota is spent are claimed under the fallback. Says why and for how
  /// long the limits held the claim back. With an empty `provider` only the
  /// budgets can hold runs back (claim() is this without the why).
  claim_result claim_limited(std::string_view stage, int limit, std::string_view worker,
                             std::chrono::milliseconds lease, std::string_view provider,
                             std::string_view fallback = {}, int64_t token = 0);

  /// Writes the limits of the providers in `providers_json` (the
  /// configuration's "providers" array, defaults filled in; see
  /// migrations/R_sync_providers.sql) and keeps their state; others are left
  /// alone.
  void sync_providers(const std::string& providers_json);

  /// Writes the budgets of a configuration ("budgets" of its canonical
  /// JSON: config::budgets_json), as a worker does at start and on every
  /// reload; wakes the stages waiting for the budget.
  void sync_budgets(const std::string& budgets_json);

  /// Provider and cost events no worker has logged yet, marked as logged by
  /// `worker`: each event reaches exactly one worker. Oldest first, at most
  /// `limit`.
  std::vector<provider_event> take_provider_events(std::string_view worker, int limit = 100);

  /// Every provider's limits and state now, for `spool providers`.
  std::vector<provider_status> providers_status(int events = 5);

  /// Records many outcomes in one round trip; each is fenced by
  /// (worker, attempt, lease token). Results are in input order.
  std::vector<recorded> record(std::string_view worker,
                               const std::vector<outcome_record>& outcomes);

  /// Like record(), but when the database refuses the batch for its
  /// content (pg::error::transient() is false: a data exception, a
  /// constraint, a program limit), finds the records it refuses by halving
  /// and records each of those as a permanent failure carrying the
  /// database's message; the rest are recorded as they are. A record the
  /// database refuses even as a plain failure comes back not accepted with
  /// state "unrecordable". Transient errors (a lost connection, a timeout)
  /// are thrown: the caller keeps the batch and tries again.
  std::vector<recorded> record_isolating(std::string_view worker,
                                         const std::vector<outcome_record>& outcomes);

  /// Extends exactly the leases in `held` that `worker` still holds and
  /// stamps its heartbeat. Answers with every claim of `held` the database
  /// no longer attributes to the worker (lost), and hands back at once the
  /// runs it attributes to the worker from claims with a token up to
  /// `horizon` that `held` does not name (released).
  std::vector<heartbeat_note> heartbeat(std::string_view worker,
                                        std::chrono::milliseconds lease,
                                        const std::vector<held_claim>& held,
                                        int64_t horizon);

  /// Returns runs whose lease expired to the queue (or fails them past their
  /// retry limit). Safe from every worker at once.
  std::vector<recorded> rescue(int limit);

  void register_worker(const worker_info& w);
  void worker_stopped(std::string_view worker);

  /// False when there is no such task.
  bool set_priority(int64_t task_id, priority p);

  struct cancelled_run {
    int64_t run_id;
    bool was_running;
  };
  /// Cancels the task's unfinished runs; running ones are told to stop
  /// through NOTIFY spool_cancel.
  std::vector<cancelled_run> cancel(int64_t task_id);

  /// The approval gate (R_approval.sql): "approved", "already_approved",
  /// "finished" (the task ended: nothing to decide) or "not_found". `by`
  /// says who decided (a CLI user, an API client).
  std::string approve(int64_t task_id, std::string_view by, std::string_view note);
  /// Cancels the task with "rejected: <reason>": "rejected", "finished" or
  /// "not_found".
  std::string reject(int64_t task_id, std::string_view by, std::string_view reason);

  /// Whether anything of `stages` (every stage when empty) is ready,
  /// running or waiting on a retry.
  bool has_pending_work(const std::vector<std::string>& stages = {});

private:
  pg::connection& conn_;
};

} // namespace spool::store
