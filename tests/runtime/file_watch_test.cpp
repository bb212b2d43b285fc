#include "runtime/file_watch.hpp"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <thread>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using spool::file_watch;

namespace {

/// Waits for a change that must come: generous, this machine is shared.
constexpr auto must_come = 10s;
/// Waits for a change that must not come.
constexpr auto must_not_come = 1500ms;
/// Debounce of the tests that do not measure it.
constexpr auto quick = 50ms;

/// A fresh directory, removed with everything in it.
struct temp_dir {
  fs::path path;
  temp_dir() {
    auto tmpl = (fs::temp_directory_path() / "spool_watch_XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const {
    return (path / name).string();
  }
};

/// Rewrites `path` in place (truncate, write), as `echo x > path` does.
void write_in_place(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  REQUIRE(out.good());
}

/// Saves as many editors do: a new file beside it, renamed over it.
void save_by_rename(const std::string& path, const std::string& text) {
  auto tmp = path + ".tmp";
  write_in_place(tmp, text);
  fs::rename(tmp, path);
}

} // namespace

TEST_CASE("a file rewritten in place with other content is a change",
          "[file_watch]") {
  temp_dir dir;
  auto path = dir.file("spool.json");
  write_in_place(path, "one");
  file_watch w(path, quick);
  CHECK(w.path() == path);
  write_in_place(path, "two");
  CHECK(w.wait(must_come));
  // Reported once.
  CHECK_FALSE(w.wait(must_not_come));
}

TEST_CASE("a file saved by renaming a new one over it is a change",
          "[file_watch]") {
  temp_dir dir;
  auto path = dir.file("spool.json");
  write_in_place(path, "one");
  file_watch w(path, quick);
  save_by_rename(path, "two");
  CHECK(w.wait(must_come));
  save_by_rename(path, "three");
  CHECK(w.wait(must_come));
  CHECK_FALSE(w.wait(must_not_come));
}

TEST_CASE("a rewrite with the same bytes or a touch is no change",
          "[file_watch]") {
  temp_dir dir;
  auto path = dir.file("spool.json");
  write_in_place(path, "same");
  file_watch w(path, quick);
  SECTION("in place") {
    write_in_place(path, "same");
  }
  SECTION("by rename") {
    save_by_rename(path, "same");
  }
  SECTION("touch") {
    REQUIRE(::utimensat(AT_FDCWD, path.c_str(), nullptr, 0) == 0);
  }
  SECTION("another file in the directory") {
    write_in_place(dir.file("other.json"), "x");
  }
  CHECK_FALSE(w.wait(must_not_come));
  // And the watch still sees a real change afterwards.
  write_in_place(path, "different");
  CHECK(w.wait(must_come));
}

TEST_CASE("a burst of writes is reported once, after the debounce",
          "[file_watch]") {
  temp_dir dir;
  auto path = dir.file("spool.json");
  write_in_place(path, "v0");
  // Writes 20 ms apart, a debounce far longer than that: one report. An
  // undebounced watch would report the first write at once and the rest
  // on the second wait.
  file_watch w(path, 1s);
  std::thread writer([&] {
    for (int i = 1; i <= 10; ++i) {
      write_in_place(path, "v" + std::to_string(i));
      std::this_thread::sleep_for(20ms);
    }
  });
  auto start = std::chrono::steady_clock::now();
  auto changed = w.wait(must_come);
  auto waited = std::chrono::steady_clock::now() - start;
  writer.join();
  CHECK(changed);
  // At least the debounce after the first write.
  CHECK(waited >= 1s);
  CHECK_FALSE(w.wait(must_not_come));
}

TEST_CASE("a change within its debounce when the wait ends is reported by "
          "the next wait",
          "[file_watch]") {
  temp_dir dir;
  auto path = dir.file("spool.json");
  write_in_place(path, "one");
  file_watch w(path, 500ms);
  write_in_place(path, "two");
  CHECK_FALSE(w.wait(0ms)); // seen, not yet quiet for the debounce
  CHECK(w.wait(must_come));
}

TEST_CASE("a deleted file is a change only once it is back with other "
          "content",
          "[file_watch]") {
  temp_dir dir;
  auto path = dir.file("spool.json");
  write_in_place(path, "one");
  file_watch w(path, quick);
  fs::remove(path);
  CHECK_FALSE(w.wait(must_not_come));
  SECTION("back with other content") {
    write_in_place(path, "two");
    CHECK(w.wait(must_come));
  }
  SECTION("back with the same content") {
    write_in_place(path, "one");
    CHECK_FALSE(w.wait(must_not_come));
    write_in_place(path, "two");
    CHECK(w.wait(must_come));
  }
}

TEST_CASE("a file missing at the start is a change when it is created",
          "[file_watch]") {
  temp_dir dir;
  auto path = dir.file("spool.json");
  file_watch w(path, quick);
  CHECK_FALSE(w.wait(200ms));
  write_in_place(path, "");
  CHECK(w.wait(must_come));
}

TEST_CASE("a swapped symlink directory (a Kubernetes ConfigMap) is a change",
          "[file_watch]") {
  // The layout kubelet writes: spool.json -> ..data/spool.json, ..data ->
  // a timestamped directory; an update renames a new ..data over the old.
  temp_dir dir;
  fs::create_directory(dir.path / "..v1");
  write_in_place(dir.file("..v1/spool.json"), "one");
  fs::create_directory_symlink("..v1", dir.path / "..data");
  fs::create_symlink("..data/spool.json", dir.path / "spool.json");
  auto path = dir.file("spool.json");
  file_watch w(path, quick);

  fs::create_directory(dir.path / "..v2");
  write_in_place(dir.file("..v2/spool.json"), "two");
  fs::create_directory_symlink("..v2", dir.path / "..data_tmp");
  fs::rename(dir.path / "..data_tmp", dir.path / "..data");
  fs::remove_all(dir.path / "..v1");
  CHECK(w.wait(must_come));
  CHECK_FALSE(w.wait(must_not_come));
}

TEST_CASE("a watched directory removed and created again is watched again",
          "[file_watch]") {
  temp_dir dir;
  auto sub = dir.path / "config";
  fs::create_directory(sub);
  auto path = (sub / "spool.json").string();
  write_in_place(path, "one");
  file_watch w(path, quick);
  fs::remove_all(sub);
  CHECK_FALSE(w.wait(500ms));
  fs::create_directory(sub);
  write_in_place(path, "two");
  CHECK(w.wait(must_come));
  write_in_place(path, "three");
  CHECK(w.wait(must_come));
}

TEST_CASE("a wait without a change returns false after its timeout",
          "[file_watch]") {
  temp_dir dir;
  auto path = dir.file("spool.json");
  write_in_place(path, "one");
  file_watch w(path, quick);
  auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(w.wait(300ms));
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);
  CHECK_FALSE(w.wait(0ms));
}

TEST_CASE("watching a file in a missing directory throws", "[file_watch]") {
  temp_dir dir;
  CHECK_THROWS_AS(file_watch(dir.file("nope/spool.json")), std::system_error);
}
