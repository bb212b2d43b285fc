#include "runtime/file_watch.hpp"

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <optional>
#include <system_error>

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

namespace spool {

namespace {

/// Events of the directory that may mean the file changed: written and
/// closed, created, deleted, renamed in or out, attributes (a touch, a
/// symlink's target swapped), and the directory itself deleted or moved.
constexpr uint32_t watch_mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
                                | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB
                                | IN_DELETE_SELF | IN_MOVE_SELF;

/// How often a lost directory watch is tried again.
constexpr std::chrono::seconds rewatch_interval{1};

/// A re-check is due at the latest this many debounce periods after the
/// first event of a burst, however busy the directory.
constexpr int max_debounce_periods = 10;

/// FNV-1a 64 of the bytes, continued from `h`.
uint64_t fnv1a_64(const char* data, std::size_t n, uint64_t h) {
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 1099511628211ull;
  }
  return h;
}

/// The hash of the file's bytes; nullopt when it cannot be read (missing,
/// unreadable, a directory).
std::optional<uint64_t> hash_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return std::nullopt;
  uint64_t h = 14695981039346656037ull;
  char buf[8192];
  for (;;) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0)
      break;
    h = fnv1a_64(buf, static_cast<std::size_t>(n), h);
  }
  ::close(fd);
  return h;
}

std::string directory_of(const std::string& path) {
  auto dir = std::filesystem::path(path).parent_path();
  return dir.empty() ? std::string(".") : dir.string();
}

/// Milliseconds from now until `t`, rounded up (so that poll() does not
/// wake just before `t` and spin), 0 when past, at most INT_MAX.
int poll_timeout(std::chrono::steady_clock::time_point now,
                 std::chrono::steady_clock::time_point t) {
  if (t <= now)
    return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(t - now).count();
  return static_cast<int>(std::min<long long>(ms, 0x7fffffff));
}

} // namespace

file_watch::file_watch(std::string path, std::chrono::milliseconds debounce)
  : path_(std::move(path)),
    dir_(directory_of(path_)),
    debounce_(std::max(debounce, std::chrono::milliseconds{0})) {
  fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0)
    throw std::system_error(errno, std::system_category(),
                            "watching " + path_ + ": inotify_init1");
  wd_ = ::inotify_add_watch(fd_, dir_.c_str(), watch_mask);
  if (wd_ < 0) {
    auto err = errno;
    ::close(fd_);
    throw std::system_error(err, std::system_category(),
                            "watching " + path_ + ": directory " + dir_);
  }
  if (auto h = hash_file(path_)) {
    last_exists_ = true;
    last_hash_ = *h;
  }
}

file_watch::~file_watch() {
  if (fd_ >= 0)
    ::close(fd_);
}

bool file_watch::wait(std::chrono::milliseconds timeout) {
  auto deadline = clock::now() + std::max(timeout, std::chrono::milliseconds{0});
  // At least one poll per call, so that wait(0) still sees queued events.
  bool polled = false;
  for (;;) {
    auto now = clock::now();
    if (pending_ && now >= check_at()) {
      pending_ = false;
      if (refresh())
        return true;
    }
    if (wd_ < 0 && now >= next_rewatch_)
      rewatch(now);
    if (polled && now >= deadline)
      return false;
    auto until = deadline;
    if (pending_)
      until = std::min(until, check_at());
    if (wd_ < 0)
      until = std::min(until, next_rewatch_);
    pollfd pfd{fd_, POLLIN, 0};
    auto rc = ::poll(&pfd, 1, poll_timeout(now, until));
    polled = true;
    if (rc < 0) {
      if (errno == EINTR)
        continue;
      throw std::system_error(errno, std::system_category(),
                              "watching " + path_ + ": poll");
    }
    if (rc > 0 && drain()) {
      auto t = clock::now();
      if (!pending_)
        pending_since_ = t;
      pending_ = true;
      last_event_ = t;
    }
  }
}

file_watch::clock::time_point file_watch::check_at() const noexcept {
  return std::min(last_event_ + debounce_,
                  pending_since_ + max_debounce_periods * debounce_);
}

bool file_watch::drain() {
  bool any = false;
  alignas(inotify_event) char buf[16 * (sizeof(inotify_event) + 256)];
  for (;;) {
    auto n = ::read(fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) // EAGAIN: the queue is empty
      return any;
    any = true;
    for (char* p = buf; p < buf + n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(p);
      if (ev->wd == wd_ && wd_ >= 0) {
        if (ev->mask & IN_IGNORED) {
          wd_ = -1; // removed by the kernel: the directory is gone
          next_rewatch_ = clock::now();
        } else if (ev->mask & IN_MOVE_SELF) {
          // The watch follows the moved directory, not the path: drop it.
          ::inotify_rm_watch(fd_, wd_);
          wd_ = -1;
          next_rewatch_ = clock::now();
        }
      }
      p += sizeof(inotify_event) + ev->len;
    }
  }
}

bool file_watch::refresh() {
  auto h = hash_file(path_);
  if (!h)
    return false; // gone: nothing to report until it is back
  if (last_exists_ && *h == last_hash_)
    return false;
  last_exists_ = true;
  last_hash_ = *h;
  return true;
}

void file_watch::rewatch(clock::time_point now) {
  wd_ = ::inotify_add_watch(fd_, dir_.c_str(), watch_mask);
  if (wd_ < 0) {
    next_rewatch_ = now + rewatch_interval;
    return;
  }
  // The file may have appeared while nothing watched: check it.
  if (!pending_)
    pending_since_ = now;
  pending_ = true;
  last_event_ = now;
}

} // namespace spool
