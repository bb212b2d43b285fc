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
///
/// Each worker has "http_address": where it serves /metrics ("host:port";
/// null: nowhere), and the configuration it runs: "config_version" (its
/// checksum; "" when unknown), "config_stored_version" (the stored version
/// it came from; null for a file or when not recorded), "config_applied_at"
/// (null when not recorded), "config_restart_pending" (changed properties
/// kept at their old values until a restart) and "config_differs".
/// "configurations": [{"checksum", "workers", "reference"}] lists the
/// checksums live workers run; when there are several, the reference is the
/// one most of them run (among equals, the one applied most recently) and
/// every live worker running another has "config_differs": true.
boost::json::value queue_status(pg::connection& conn);

/// A task with every stage run and attempt; nullopt when there is none.
std::optional<boost::json::value> task_detail(pg::connection& conn, int64_t task_id);

} // namespace spool::store
