#pragma once
// Runs the spool binary as a user would, capturing exit code and output.

#include <map>
#include <string>
#include <vector>

namespace spool::test {

struct cli_result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

/// For a forked child: applies `env` ("<unset>" removes a variable) and
/// execs the spool binary with `args`; never returns (exit 127 when the exec
/// fails).
[[noreturn]] void exec_spool(const std::vector<std::string>& args,
                             const std::map<std::string, std::string>& env);

/// Runs `spool args...` with `env` added to the environment (a value of
/// "<unset>" removes the variable) and waits for it.
cli_result run_spool(const std::vector<std::string>& args,
                     const std::map<std::string, std::string>& env = {},
                     const std::string& stdin_data = {});

/// A spool process running in the background (e.g. `spool run`); its
/// stdout and stderr go to a file. Killed (SIGKILL) if still running when
/// destroyed.
class spool_process {
public:
  spool_process(const std::vector<std::string>& args,
                const std::map<std::string, std::string>& env = {});
  /// Another program (argv[0] looked up in PATH), run the same way.
  struct other_program {};
  spool_process(other_program, const std::vector<std::string>& argv);
  ~spool_process();
  spool_process(const spool_process&) = delete;
  spool_process& operator=(const spool_process&) = delete;

  int pid() const noexcept { return pid_; }
  void signal(int sig) const;
  /// Waits up to `timeout_s` for the exit; returns the exit code (128 +
  /// signal when killed), or -1 on timeout.
  int wait(double timeout_s);
  bool running();
  /// Everything it printed so far.
  std::string output() const;
  /// Peak resident set size in KiB, known once it has exited.
  long max_rss_kb() const noexcept { return max_rss_kb_; }

private:
  int pid_ = -1;
  int status_ = -1;
  long max_rss_kb_ = 0;
  bool reaped_ = false;
  std::string log_;
};

/// Writes `text` to a new temporary file and returns its path.
std::string temp_file(const std::string& text, const std::string& suffix = ".json");

} // namespace spool::test
