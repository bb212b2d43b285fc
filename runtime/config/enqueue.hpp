#pragma once
// What an enqueue takes from a configuration: the pipeline its runs copy
// (stages, DAG, optional, retry limits, the approval gate) and each run's
// cost estimate. Used by `spool enqueue`, `spool demo` and the client API.

#include "runtime/config/config.hpp"
#include "runtime/store/store.hpp"

#include <vector>

namespace spool::config {

/// The queue's view of the configured pipeline.
std::vector<store::pipeline_stage> pipeline_of(const snapshot& cfg);

/// Gives each task its run estimates (one per stage of pipeline_of(cfg))
/// from its payload and the stages' prices; a task without an
/// estimated_cost of its own is then estimated at their sum.
void add_estimates(const snapshot& cfg, std::vector<store::new_task>& tasks);

} // namespace spool::config
