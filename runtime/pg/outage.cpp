#include "runtime/pg/outage.hpp"

#include <spdlog/spdlog.h>

namespace spool::pg {

void outage_log::failed(std::string_view what) {
  std::lock_guard guard{mtx_};
  if (down_) {
    spdlog::debug("database still unreachable: {}", what);
    return;
  }
  down_ = true;
  since_ = std::chrono::steady_clock::now();
  spdlog::warn("database unreachable, work in memory is kept and retried: {}", what);
}

void outage_log::succeeded() {
  std::lock_guard guard{mtx_};
  if (!down_)
    return;
  down_ = false;
  auto gone = std::chrono::duration<double>(std::chrono::steady_clock::now() - since_);
  spdlog::info("database reachable again after {:.1f} s", gone.count());
}

bool outage_log::down() const {
  std::lock_guard guard{mtx_};
  return down_;
}

} // namespace spool::pg
