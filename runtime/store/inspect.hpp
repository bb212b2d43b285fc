#pragma once
// Read-only views of the queue for operators: `spool status` and
// `spool task show`. Results are JSON values; the CLI renders them as text
// or prints them as they are (--json).

#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>

namespace spool::pg {
class connection;
}

namespace spool::store {

/// Per stage x state counts ("stages"), task counts by state ("tasks"),
/// ready depth per channel ("channels"), workers ("workers": at most 100,
/// live first, each with "state" live|stale|stopped, the "stages" it serves
/// and its heartbeat age), and "unserved": [{"stage", "ready"}] for stages
/// with ready runs that no live worker serves. A worker is live while it is
/// not stopped and its last heartbeat is younger than its lease; a worker
/// that registered no stages counts as serving every stage.
boost::json::value queue_status(pg::connection& conn);

/// A task with every stage run and attempt; nullopt when there is none.
std::optional<boost::json::value> task_detail(pg::connection& conn, int64_t task_id);

} // namespace spool::store
