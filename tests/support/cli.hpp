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

/// Runs `spool args...` with `env` added to the environment (a value of
/// "<unset>" removes the variable) and waits for it.
cli_result run_spool(const std::vector<std::string>& args,
                     const std::map<std::string, std::string>& env = {},
                     const std::string& stdin_data = {});

} // namespace spool::test
