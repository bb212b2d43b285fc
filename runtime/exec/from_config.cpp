#include "runtime/exec/from_config.hpp"

#include "runtime/local_db.hpp"

#include <filesystem>

namespace spool::exec {

simulate_settings simulate_settings_of(const config::simulate_config& c) {
  simulate_settings s;
  switch (c.latency.dist) {
    case config::latency_dist::fixed:
      s.latency = simulate_settings::dist::fixed;
      break;
    case config::latency_dist::uniform:
      s.latency = simulate_settings::dist::uniform;
      break;
    case config::latency_dist::lognormal:
      s.latency = simulate_settings::dist::lognormal;
      break;
  }
  s.fixed_ms = c.latency.ms;
  s.min_ms = c.latency.min_ms;
  s.max_ms = c.latency.max_ms;
  s.p50_ms = c.latency.p50_ms;
  s.p99_ms = c.latency.p99_ms;
  s.p_transient = c.errors.transient;
  s.p_network = c.errors.network;
  s.p_rate_limited = c.errors.rate_limited;
  s.p_permanent = c.errors.permanent;
  s.p_timeout = c.errors.timeout;
  s.p_crash = c.errors.crash;
  s.retry_after_s = c.retry_after_s;
  s.cost = c.cost;
  s.seed = c.seed;
  return s;
}

command_spec command_spec_of(const config::command_config& c, std::string stdin_data,
                             std::chrono::milliseconds timeout) {
  namespace fs = std::filesystem;
  command_spec spec;
  spec.argv = c.argv;
  if (!spec.argv.empty() && spec.argv[0].find('/') != std::string::npos
      && fs::path{spec.argv[0]}.is_relative() && !fs::exists(spec.argv[0])) {
    auto in_home = spool_home() / spec.argv[0];
    if (fs::exists(in_home))
      spec.argv[0] = in_home.string();
  }
  // Only the base allow list and what the stage names reach the program:
  // never the worker's database URL, PG* settings or other secrets.
  spec.inherit_env = base_environment_names();
  spec.inherit_env.insert(spec.inherit_env.end(), c.pass_env.begin(), c.pass_env.end());
  spec.env = c.env;
  spec.stdin_data = std::move(stdin_data);
  // The supervisor enforces the timeout (and cancels through the runner);
  // the runner's own limit is a backstop in case a cancel gets lost.
  spec.timeout = timeout + c.kill_grace() + std::chrono::seconds{30};
  spec.kill_grace = c.kill_grace();
  return spec;
}

} // namespace spool::exec
