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

/// Per stage x state counts, task counts by state, ready depth per channel,
/// and workers with their last heartbeat.
boost::json::value queue_status(pg::connection& conn);

/// A task with every stage run and attempt; nullopt when there is none.
std::optional<boost::json::value> task_detail(pg::connection& conn, int64_t task_id);

} // namespace spool::store
