#include "runtime/config/enqueue.hpp"

#include "runtime/config/cost.hpp"

#include <algorithm>

namespace spool::config {

std::vector<store::pipeline_stage> pipeline_of(const snapshot& cfg) {
  std::vector<store::pipeline_stage> out;
  for (auto& s : cfg.stages)
    out.push_back(
      {s.name, s.after, s.optional, s.retry.max_retries, s.retry.max_lost_leases, s.approval});
  return out;
}

void add_estimates(const snapshot& cfg, std::vector<store::new_task>& tasks) {
  if (std::none_of(cfg.stages.begin(), cfg.stages.end(),
                   [](const stage_config& s) { return s.has_price; }))
    return;
  for (auto& t : tasks) {
    // (payloads were checked to be JSON objects when they were read)
    auto e = cost::estimate_task(cfg, t.payload);
    t.run_estimates.clear();
    for (auto& s : e.stages)
      t.run_estimates.push_back(s.usd);
  }
}

} // namespace spool::config
