#pragma once
// A fixed-size pool of connections shared by threads. Checkout verifies the
// connection without a round trip and reconnects (with backoff) after the
// server went away, e.g. a PostgreSQL restart.

#include "runtime/pg/connection.hpp"

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace spool::pg {

struct pool_options {
  /// Connections at most. Defaults to 10.
  std::size_t size = 10;
  /// How long acquire() waits for a free connection. Defaults to 30 s.
  std::chrono::milliseconds acquire_timeout{30'000};
  /// How long a checkout keeps trying to reconnect to a server that is down
  /// before it gives up with an error. Defaults to 30 s.
  std::chrono::milliseconds reconnect_timeout{30'000};
  /// First reconnect delay; doubles up to `max_backoff`. Defaults 50 ms / 2 s.
  std::chrono::milliseconds initial_backoff{50};
  std::chrono::milliseconds max_backoff{2'000};
  /// Session setup run on every new connection (static SQL).
  std::string on_connect;
  /// Timeouts and keepalives of every connection.
  connection_options connection;
};

class pool {
public:
  class lease;

  explicit pool(std::string url, pool_options opts = {});
  ~pool();
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  /// A healthy connection, reconnected if needed; throws pg::error when none
  /// frees up in time or the server stays unreachable past reconnect_timeout.
  lease acquire();

  const std::string& url() const noexcept { return url_; }
  std::size_t size() const noexcept { return opts_.size; }
  /// Connections (re)established so far; for tests and metrics.
  std::size_t connects() const;

private:
  void release(std::unique_ptr<connection> conn);
  void make_healthy(std::unique_ptr<connection>& conn);

  std::string url_;
  pool_options opts_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<connection>> idle_;
  std::size_t open_ = 0; // handed out + idle + being created
  std::size_t connects_ = 0;
};

/// A checked-out connection; returns it to the pool when destroyed.
class pool::lease {
public:
  lease(lease&&) noexcept = default;
  lease& operator=(lease&&) noexcept = default;
  ~lease();
  connection& operator*() const noexcept { return *conn_; }
  connection* operator->() const noexcept { return conn_.get(); }

private:
  friend class pool;
  lease(pool* owner, std::unique_ptr<connection> conn)
    : owner_(owner), conn_(std::move(conn)) {
  }
  pool* owner_;
  std::unique_ptr<connection> conn_;
};

} // namespace spool::pg
