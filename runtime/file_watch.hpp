#pragma once
// Watches one file for changes of its content with inotify. It watches the
// file's directory, so that it survives editors that save by writing a new
// file and renaming it over the old one, and a file that is deleted and
// created again; it compares the content (a hash) so that a touch or a
// rewrite with the same bytes is no change. Changes are debounced: a burst
// of writes reports once, after `debounce` of quiet.
//
// No CAF, no threads: the owner calls wait() in its own loop.

#include <chrono>
#include <cstdint>
#include <string>

namespace spool {

class file_watch {
public:
  /// Starts watching `path` (its directory must exist; the file need not).
  /// Throws std::system_error when inotify is unavailable.
  explicit file_watch(std::string path,
                      std::chrono::milliseconds debounce = std::chrono::milliseconds{200});
  ~file_watch();
  file_watch(const file_watch&) = delete;
  file_watch& operator=(const file_watch&) = delete;

  /// Waits at most `timeout` for a change. True when the file's content
  /// differs from what it was at construction or at the last true return
  /// (a deleted file counts as a change only once it exists again).
  bool wait(std::chrono::milliseconds timeout);

  const std::string& path() const noexcept { return path_; }

private:
  std::string path_;
  std::chrono::milliseconds debounce_;
  int fd_ = -1;
  uint64_t last_hash_ = 0;
  bool last_exists_ = false;
  std::chrono::steady_clock::time_point pending_since_{};
  bool pending_ = false;
};

} // namespace spool
