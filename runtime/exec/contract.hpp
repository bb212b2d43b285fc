#pragma once
// The `command` executor's contract with the program it runs: the job input
// JSON written to the program's stdin, and the result JSON it prints as the
// last non-empty line of its stdout.
//
// Input (one JSON object, no trailing newline):
//   {"task_id":12,"stage":"assembly","attempt":1,
//    "idempotency_key":"12:assembly:1",   (task:stage:call, see job_input)
//    "work_dir":"/abs/data/tasks/12/assembly",
//    "data_dir":"/abs/data","channel_id":"ch1","priority":"normal",
//    "payload":{...},"inputs":{"video_gen":{...},"narration":{...}},
//    "context":{"client_id":"acme","campaign_id":"spring",
//               "brand":{...guidelines},"brief":{...},
//               "prompt_context":"Brand acme: voice: warm. Campaign spring: ..."}}
//   (context: {"brand":null,"brief":null,"prompt_context":""} for a task
//   without guidelines or brief)
//
// Result (the last non-empty line of stdout; earlier lines are ignored):
//   {"status":"ok","output":{...},"cost":0.05}
//   {"status":"error","class":"rate_limited","retry_after_s":30,
//    "message":"...","cost":0.01}

#include "runtime/exec/command_runner.hpp"
#include "runtime/outcome.hpp"

#include <cstdint>
#include <map>
#include <string>

namespace spool::exec {

/// What a command learns about the job it runs.
struct job_input {
  int64_t task_id = 0;
  std::string stage;
  /// 1 for the first claim; every claim counts (also after a rescue, a
  /// drain or a snooze).
  int attempt = 1;
  /// The logical call: 1 + the attempts that failed with a result a
  /// provider could have seen (retry, timeout). The idempotency key follows
  /// it. 0 means "same as attempt".
  int call = 0;
  /// Absolute directory for this stage's files (the caller creates it).
  std::string work_dir;
  /// Absolute root of all task data.
  std::string data_dir;
  std::string channel_id;
  /// "high", "normal" or "low".
  std::string priority = "normal";
  /// The task payload, a JSON object in text form. Text that is not a JSON
  /// object is sent as {}.
  std::string payload_json = "{}";
  /// Outputs of the stages this one depends on: stage name -> JSON object
  /// text. Text that is not a JSON object is sent as {}.
  std::map<std::string, std::string> inputs;
  /// Alternatively, all inputs as one JSON object text (as the store returns
  /// them); used when `inputs` is empty.
  std::string inputs_json;
  /// The task's brand and campaign context (JSON object text, as the store
  /// returns it); empty when it has none.
  std::string context_json;
};

/// The idempotency key of a logical call, "<task_id>:<stage>:<call>": the
/// same for every redelivery of that call (after a drain, a rescue, a lost
/// lease or a snooze); it changes only after an attempt whose result a
/// provider could have seen (a retry after an error, a timeout).
std::string idempotency_key(int64_t task_id, std::string_view stage,
                            int call);

/// The JSON object written to a command's stdin. Thread-safe.
std::string make_job_input(const job_input& in);

/// Maps how a command ended and what it printed to an outcome. Thread-safe.
///
/// - timed_out -> timeout; cancelled -> cancelled; spawn_failed -> permanent
///   (a missing program will not appear by retrying), with the error text,
///   except for a lack of resources (error_code EAGAIN, EMFILE, ENFILE,
///   ENOMEM, ETXTBSY, EINTR), which is transient.
/// - Otherwise the last non-empty stdout line must be a result object:
///   "status" "ok" with an optional object "output" (default {}) and an
///   optional non-negative "cost" (default 0); or "status" "error" with
///   "class" one of transient, network, rate_limited, permanent, timeout, an
///   optional non-negative "retry_after_s", an optional "message" (a
///   non-string message is kept as its JSON text) and an optional "cost".
/// - A valid error result is used whatever the exit code. A valid ok result
///   counts only with exit code 0; with another exit code or a signal it is
///   transient ("exit code 3 with status ok").
/// - A result line that is not valid UTF-8 is transient, with a message
///   saying so and the offset of the first bad byte.
/// - A missing, malformed or invalid result is transient, with a message
///   naming the problem, e.g. `result: "status" must be "ok" or "error"`,
///   followed by the exit status when not 0 and "; stderr: <tail>" when
///   stderr was not empty.
///
/// Messages are valid UTF-8 without NUL bytes (other bytes become '?'), so
/// they can be stored as text as they are.
spool::outcome parse_command_result(const command_result& r);

} // namespace spool::exec
