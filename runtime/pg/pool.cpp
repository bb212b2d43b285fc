#include "runtime/pg/pool.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

namespace spool::pg {

pool::pool(std::string url, pool_options opts)
  : url_(std::move(url)), opts_(std::move(opts)) {
  if (opts_.size == 0)
    opts_.size = 1;
}

pool::~pool() = default;

std::size_t pool::connects() const {
  std::lock_guard guard{mtx_};
  return connects_;
}

pool::lease pool::acquire() {
  std::unique_ptr<connection> conn;
  {
    std::unique_lock guard{mtx_};
    auto available = [this] { return !idle_.empty() || open_ < opts_.size; };
    if (!cv_.wait_for(guard, opts_.acquire_timeout, available))
      throw error("acquiring a database connection",
                  "all " + std::to_string(opts_.size)
                    + " pool connections stayed busy");
    if (!idle_.empty()) {
      conn = std::move(idle_.back());
      idle_.pop_back();
    } else {
      ++open_;
    }
  }
  try {
    make_healthy(conn);
  } catch (...) {
    std::lock_guard guard{mtx_};
    --open_;
    cv_.notify_one();
    throw;
  }
  return lease{this, std::move(conn)};
}

void pool::make_healthy(std::unique_ptr<connection>& conn) {
  if (conn && conn->healthy())
    return;
  auto deadline = std::chrono::steady_clock::now() + opts_.reconnect_timeout;
  auto backoff = opts_.initial_backoff;
  for (int attempt = 1;; ++attempt) {
    try {
      if (conn)
        conn->reconnect();
      else
        conn = std::make_unique<connection>(url_, opts_.connection);
      if (!opts_.on_connect.empty())
        conn->exec_script(opts_.on_connect, "setting up session");
      std::lock_guard guard{mtx_};
      ++connects_;
      return;
    } catch (const error& e) {
      if (std::chrono::steady_clock::now() + backoff >= deadline)
        throw;
      if (attempt == 1)
        spdlog::debug("database unavailable, reconnecting: {}", e.what());
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, opts_.max_backoff);
    }
  }
}

void pool::release(std::unique_ptr<connection> conn) {
  std::lock_guard guard{mtx_};
  // A broken connection goes back too: the next checkout reconnects it.
  if (conn)
    idle_.push_back(std::move(conn));
  else
    --open_;
  cv_.notify_one();
}

pool::lease::~lease() {
  if (owner_ && conn_)
    owner_->release(std::move(conn_));
}

} // namespace spool::pg
