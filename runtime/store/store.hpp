#pragma once
// The durable queue: all SQL a worker or the CLI runs against tasks and stage
// runs lives behind this one narrow interface. Each method is one round trip
// (a server-side function from migrations/0002_queue.up.sql) on the
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

/// One stage as the queue sees it: its place in the DAG and its retry limit.
struct pipeline_stage {
  std::string name;
  std::vector<std::string> after;
  bool optional = false;
  int max_retries = 3;
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
  double estimated_cost = 0;
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
  /// The claim's attempt number: with the worker id, it fences outcomes.
  int attempt = 0;
  /// Attempts that failed so far (counted toward the retry limit).
  int failed_attempts = 0;
  std::string channel_id;
  std::string priority;
  std::string payload; // JSON object text
  std::string inputs;  // JSON object text: upstream stage -> its output
};

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
};

class store {
public:
  explicit store(pg::connection& conn) : conn_(conn) {
  }

  /// Creates tasks and their stage runs in one round trip; roots are ready at
  /// once and idle workers are woken (NOTIFY spool_wakeup).
  std::vector<enqueued> enqueue(const std::vector<new_task>& tasks,
                                const std::vector<pipeline_stage>& pipeline);

  /// Claims up to `limit` ready runs of `stage` in fair order: priority,
  /// then round-robin across channels, then FIFO.
  std::vector<claimed_run> claim(std::string_view stage, int limit,
                                 std::string_view worker,
                                 std::chrono::milliseconds lease);

  /// Records many outcomes in one round trip; each is fenced by
  /// (worker, attempt). Results are in input order.
  std::vector<recorded> record(std::string_view worker,
                               const std::vector<outcome_record>& outcomes);

  /// Extends every lease `worker` holds and stamps its heartbeat.
  int heartbeat(std::string_view worker, std::chrono::milliseconds lease);

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

  /// Whether anything of `stages` (every stage when empty) is ready,
  /// running or waiting on a retry.
  bool has_pending_work(const std::vector<std::string>& stages = {});

private:
  pg::connection& conn_;
};

} // namespace spool::store
