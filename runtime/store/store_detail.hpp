#pragma once
// What the store's source files share; not part of the store interface.

#include "runtime/pg/connection.hpp"
#include "runtime/store/store.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

namespace spool::store::detail {

/// Runs `fn` (one statement that is its own transaction) again when the
/// server aborted it as a deadlock victim or a serialization failure: the
/// transaction rolled back whole, so nothing of it was applied. Deadlocks
/// cannot happen between claims and outcomes (see R_record_outcomes.sql); a cancel or a
/// priority change racing an outcome of the same task can rarely meet one.
/// Inside a caller's transaction it rethrows: that transaction is lost.
template <class F>
auto with_retry(pg::connection& conn, F&& fn) {
  constexpr int attempts = 4;
  for (int attempt = 1;; ++attempt) {
    try {
      return fn();
    } catch (const pg::error& e) {
      if (!e.retryable() || attempt == attempts || !conn.ok()
          || PQtransactionStatus(conn.native()) != PQTRANS_IDLE)
        throw;
      spdlog::warn("{}: {} (retrying, attempt {} of {})", e.context(), e.message(),
                   attempt + 1, attempts);
      std::this_thread::sleep_for(std::chrono::milliseconds{2 * attempt});
    }
  }
}

/// Row `i` of a spool_claim result (its first 12 columns: run_id .. inputs),
/// claimed with lease token `token`.
claimed_run read_claimed(const pg::result& res, int i, int64_t token);

} // namespace spool::store::detail
