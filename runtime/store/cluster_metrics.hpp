#pragma once
// Cluster-wide metrics: what the database knows about every worker's work
// (tasks by state, runs by stage and state, the oldest ready run, stuck
// runs, provider limits in use, the day's spend against the budgets, the
// configurations live workers run). One place serves them (a worker started
// with --cluster-metrics, or `spool exporter`), so that scraping several
// workers does not count them twice.
//
// The queries are a handful of aggregates over tasks and stage_runs (their
// size is the queue's, not the history's: only the ready-run age reads an
// index), run at most once per cache period by the caller.

#include "runtime/config/config.hpp"
#include "runtime/store/maintenance.hpp"

#include <string>
#include <vector>

namespace spool::pg {
class connection;
}
namespace spool::metrics {
class registry;
}

namespace spool::store {

/// The stuck-run limits of every stage of `cfg`.
std::vector<stage_limit> stage_limits_of(const config::snapshot& cfg);

/// Reads the cluster's state and declares its families in `out` (see the
/// README's metric list). Throws pg::error when the database fails.
void collect_cluster_metrics(pg::connection& conn, const config::snapshot& cfg,
                             metrics::registry& out);

} // namespace spool::store
