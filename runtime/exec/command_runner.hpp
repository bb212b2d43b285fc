#pragma once
// Runs child processes for the `command` executor: many at once, all owned by
// one background thread that polls their pipes and exits (pidfd), enforces
// timeouts and reaps every child. Callers never block: start() returns at
// once and the result arrives in a callback.
//
// A job is every process it starts. The runner finds them by two marks: the
// process group of the program (each program leads its own) and a per-job
// token in the environment (SPOOL_JOB_TOKEN), which descendants inherit even
// when they leave the group with setsid(). Whatever carries either mark is
// signalled when the job is stopped and killed when its program exits. With
// adopt_orphans (the default) the process is a child subreaper, so such
// descendants are re-parented to it when their parent dies and the runner
// reaps them.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace spool::exec {

/// The variable that carries a job's token into every process of the job.
/// The runner sets it last, so `env` cannot replace it.
inline constexpr const char* job_token_variable = "SPOOL_JOB_TOKEN";

/// What every child may take from the runner's environment: PATH, HOME,
/// USER, LOGNAME, LANG, LANGUAGE, LC_*, TZ and TMPDIR. Enough to find
/// programs, write temporary files and speak the locale; no credentials.
const std::vector<std::string>& base_environment_names();

/// What to run. A plain value, moved into the runner.
struct command_spec {
  /// Program and arguments; must not be empty. argv[0] without a '/' is
  /// looked up in the PATH the child gets (see `env` and `inherit_env`; a
  /// default system path when it gets none); a relative argv[0] with a '/'
  /// is resolved against the runner's current directory, not against `cwd`.
  std::vector<std::string> argv;
  /// Variables set for the child, with these values. They win over
  /// inherited ones. Defaults to none.
  std::map<std::string, std::string> env;
  /// Names of the runner's own environment variables the child gets when
  /// they are set (an unset one is simply absent). A name ending in '*'
  /// stands for every variable with that prefix (LC_*). Nothing else of the
  /// runner's environment reaches the child. Defaults to
  /// base_environment_names().
  std::vector<std::string> inherit_env = base_environment_names();
  /// Working directory of the child; empty means the runner's. It must
  /// exist (it is not created); otherwise the start fails with spawn_failed.
  std::string cwd;
  /// Written to the child's stdin, after which stdin is closed. A child that
  /// exits or closes stdin early is not an error (EPIPE is ignored).
  std::string stdin_data;
  /// Wall-clock limit from the start; then SIGTERM to the job's processes
  /// (its group and its token's carriers) and, `kill_grace` later, SIGKILL.
  /// Zero or negative means no limit. Defaults to no limit.
  std::chrono::milliseconds timeout{0};
  /// Time between SIGTERM and SIGKILL on timeout, cancel or shutdown; zero
  /// or negative sends SIGKILL at once. Defaults to 5 s.
  std::chrono::milliseconds kill_grace{5000};
  /// Most bytes of stdout kept; beyond it the oldest bytes are dropped, so
  /// the last line (the result) survives chatty output. Defaults to 4 MiB.
  std::size_t max_stdout_bytes = 4u << 20;
};

/// How a command ended and what it wrote.
struct command_result {
  enum class ending {
    exited,       // the program exited by itself (exit_code is set)
    signaled,     // killed by a signal we did not send (signal is set)
    timed_out,    // we stopped it at its timeout
    cancelled,    // we stopped it on cancel() or at runner shutdown
    spawn_failed, // it never ran; `error` says why
  };
  ending how = ending::spawn_failed;
  /// Exit status when the program exited, else -1.
  int exit_code = -1;
  /// The terminating signal when it died of one (also after timed_out or
  /// cancelled, e.g. 15 or 9), else 0.
  int signal = 0;
  /// The child's pid, which is also its process group id; 0 if never run.
  int pid = 0;
  /// Everything written to stdout, or its last max_stdout_bytes (also what
  /// a command wrote before it timed out or was cancelled).
  std::string stdout_data;
  /// True when stdout_data lost its beginning to max_stdout_bytes.
  bool stdout_truncated = false;
  /// The last 4 KiB (at most) of stderr.
  std::string stderr_tail;
  /// From start to reaping the child (0 when spawn failed).
  std::chrono::milliseconds elapsed{0};
  /// For spawn_failed: why, e.g. "examples/stages/x: No such file or
  /// directory". Empty otherwise.
  std::string error;
  /// For spawn_failed: the errno behind `error` (ENOENT, EACCES, EMFILE,
  /// EAGAIN, ...), so callers can tell a missing program from a momentary
  /// lack of resources. 0 otherwise.
  int error_code = 0;
};

/// Named points of one round of the runner loop, for
/// command_runner_options::loop_hook.
enum class loop_point {
  intake,      // before new starts and cancels are taken in
  events,      // after poll(), before its events are handled
  completions, // before finished jobs are reaped and reported
};

/// How a runner learns of exits and looks after orphans. The defaults suit
/// production; tests use them to exercise the fallbacks.
struct command_runner_options {
  /// Watch each child through a pidfd (pidfd_open, Linux >= 5.3). When false,
  /// or when the kernel lacks pidfd_open, the runner checks every child with
  /// waitid(WNOHANG) at least every `exit_poll_interval`. Defaults to true.
  bool use_pidfd = true;
  /// Poll interval of the fallback. Defaults to 20 ms.
  std::chrono::milliseconds exit_poll_interval{20};
  /// Make this process a child subreaper (PR_SET_CHILD_SUBREAPER) while any
  /// runner that asked for it lives, so that a job's descendants whose
  /// parent died are re-parented here rather than to init: they are killed
  /// with their job and reaped by the runner. An adopted process that exits
  /// by itself is reaped once it has stayed a zombie for a whole
  /// `orphan_sweep_interval`; other code in this process must therefore
  /// wait for its own children promptly. Defaults to true.
  bool adopt_orphans = true;
  /// How often the runner looks for exited adopted processes. Defaults to
  /// 1 s.
  std::chrono::milliseconds orphan_sweep_interval{1000};
  /// How long the runner keeps killing what is left of a job after its
  /// program exited before it reports the job anyway (and logs what
  /// survived, e.g. a process stuck in uninterruptible sleep). Defaults to
  /// 5 s.
  std::chrono::milliseconds drain_limit{5000};
  /// Test hook, empty in production: called at each loop_point of every
  /// round. An exception it throws exercises the loop's own recovery.
  std::function<void(loop_point)> loop_hook;
};

/// Owns a background thread and every child started through it.
///
/// Each child runs in its own process group with an explicit environment
/// (`env`, `inherit_env` and its job token). When a child exits, whatever
/// it left running, in its group or carrying its token, is killed
/// (SIGKILL) before on_done runs: a stage's work ends with its program, and
/// a retry never overlaps what its previous attempt left behind. Every
/// child is reaped; no zombies remain. A descendant that both leaves the
/// group and drops the token (e.g. `setsid env -i ...`) escapes, as does
/// one whose environment the runner may not read (another user's). All
/// file descriptors the runner opens are close-on-exec, and children
/// inherit only stdin, stdout and stderr.
///
/// The runner thread survives its own exceptions: one is logged in one
/// line and the loop goes on with every job it holds.
///
/// Thread-safety: start(), cancel() and running() may be called from any
/// thread, including from inside an on_done callback. The destructor must
/// not run on the runner thread (i.e. not from on_done).
class command_runner {
public:
  using id = uint64_t;

  /// Starts the runner thread. Throws std::system_error when the thread or
  /// its wake-up eventfd cannot be created.
  command_runner();
  explicit command_runner(command_runner_options options);
  /// Cancels everything still running (SIGTERM to each job, SIGKILL after
  /// its kill_grace), reaps every child, runs each outstanding on_done with
  /// ending::cancelled and joins the thread. May take up to the longest
  /// kill_grace when children ignore SIGTERM.
  /// Stops being a subreaper when it was the last runner that made this
  /// process one.
  ~command_runner();
  command_runner(const command_runner&) = delete;
  command_runner& operator=(const command_runner&) = delete;

  /// Starts `spec` and returns at once; the runner thread spawns the child.
  /// `on_done` runs on the runner thread exactly once, with the result
  /// (ending::spawn_failed if the child could not be started). It should be
  /// quick: it delays every other child's I/O. Exceptions it throws are
  /// logged and swallowed. Ids are unique per runner and never 0.
  id start(command_spec spec, std::function<void(command_result)> on_done);

  /// Stops the command: SIGTERM to its group and to every process carrying
  /// its token, SIGKILL after its kill_grace; its on_done gets
  /// ending::cancelled. No-op for an unknown or finished id.
  void cancel(id which);

  /// SIGKILLs every running child's process group and every process
  /// carrying one of this runner's job tokens, without waiting or
  /// reporting: for a process about to exit immediately. Thread-safe.
  void kill_all_now() noexcept;

  /// Commands started whose on_done has not yet been called. It drops just
  /// before on_done runs.
  std::size_t running() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace spool::exec
