#pragma once
// Builds executor inputs from the configuration: the simulate settings of a
// stage and the command spec of one job.

#include "runtime/config/config.hpp"
#include "runtime/exec/command_runner.hpp"
#include "runtime/exec/simulate.hpp"

#include <chrono>
#include <string>

namespace spool::exec {

simulate_settings simulate_settings_of(const config::simulate_config& c);

/// The program, environment and stdin of one job of a command stage.
/// Relative program paths resolve against the working directory, then the
/// Spool home (so the shipped examples/stages/ programs are found). The
/// program's environment is base_environment_names() and `c.pass_env`
/// taken from the worker's, then `c.env`; nothing else of the worker's.
command_spec command_spec_of(const config::command_config& c, std::string stdin_data,
                             std::chrono::milliseconds timeout);

} // namespace spool::exec
