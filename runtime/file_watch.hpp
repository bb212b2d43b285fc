#pragma once
// Watches one file for changes of its content with inotify. It watches the
// file's directory, so that it survives editors that save by writing a new
// file and renaming it over the old one, a file that is deleted and created
// again, and symlink swaps (Kubernetes ConfigMaps replace `..data`); any
// event in the directory triggers a re-check. It compares the content (a
// hash) so that a touch or a rewrite with the same bytes is no change.
// Changes are debounced: a burst of writes reports once, after `debounce`
// of quiet (at the latest 10 x `debounce` after the first event of a burst,
// so that a busy directory cannot postpone the check forever).
//
// No CAF, no threads: the owner calls wait() in its own loop (a blocking
// call: run it off the CAF scheduler).

#include <chrono>
#include <cstdint>
#include <string>

namespace spool {

class file_watch {
public:
  /// Starts watching `path` (its directory must exist; the file need not)
  /// and remembers its current content. Throws std::system_error when
  /// inotify is unavailable or the directory cannot be watched (e.g. it
  /// does not exist).
  explicit file_watch(std::string path,
                      std::chrono::milliseconds debounce = std::chrono::milliseconds{200});
  ~file_watch();
  file_watch(const file_watch&) = delete;
  file_watch& operator=(const file_watch&) = delete;

  /// Waits at most `timeout` for a change. True when the file's content
  /// differs from what it was at construction or at the last true return
  /// (a deleted file counts as a change only once it exists again, with
  /// other content; an unreadable file counts as deleted). A change seen
  /// but still within its debounce when `timeout` ends is reported by a
  /// later call. Throws std::system_error when polling fails.
  bool wait(std::chrono::milliseconds timeout);

  const std::string& path() const noexcept { return path_; }

private:
  using clock = std::chrono::steady_clock;

  /// When the pending re-check is due.
  clock::time_point check_at() const noexcept;
  /// Reads all queued events; true when there was at least one.
  bool drain();
  /// Re-reads the file; true (and remembers it) when its content differs
  /// from the last content reported.
  bool refresh();
  /// Tries to watch the directory again after its watch was lost.
  void rewatch(clock::time_point now);

  std::string path_;
  std::string dir_;
  std::chrono::milliseconds debounce_;
  int fd_ = -1;
  int wd_ = -1; // -1: the directory's watch was lost (deleted, moved)
  uint64_t last_hash_ = 0;
  bool last_exists_ = false;
  bool pending_ = false; // events seen, content not re-checked yet
  clock::time_point pending_since_{}; // first event since the last check
  clock::time_point last_event_{};
  clock::time_point next_rewatch_{};
};

} // namespace spool
