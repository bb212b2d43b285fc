// `spool demo` end to end: real stage programs (FFmpeg, espeak-ng, sox) make
// real MP4s, checked with ffprobe.

#include "runtime/pg/connection.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/test_db.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>

using namespace spool;
namespace fs = std::filesystem;

namespace {

std::string capture(const std::string& cmd) {
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> p{::popen(cmd.c_str(), "r"), &::pclose};
  char buf[512];
  while (p && std::fgets(buf, sizeof buf, p.get()))
    out += buf;
  return out;
}

/// The sum of the retries column of the demo's summary table (the rows
/// between its header and the blank line after them); -1 without a table.
int64_t summary_retries(const std::string& out) {
  auto at = out.find("stage      attempts  retries");
  if (at == std::string::npos)
    return -1;
  std::istringstream lines{out.substr(at)};
  std::string line;
  std::getline(lines, line); // the header
  int64_t sum = 0;
  while (std::getline(lines, line) && !line.empty()) {
    std::istringstream row{line};
    std::string stage;
    int64_t attempts = -1, retries = -1;
    row >> stage >> attempts >> retries;
    if (!row)
      return -1;
    sum += retries;
  }
  return sum;
}

} // namespace

TEST_CASE("a small demo makes playable MP4s with video, audio and a duration", "[db][demo]") {
  test::fresh_database db;
  char tmpl[] = "/tmp/spool_demoXXXXXX";
  fs::path data = ::mkdtemp(tmpl);
  auto res = test::run_spool({"--log-level", "warn", "demo", "--videos", "3", "--channels", "2",
                              "--data-dir", data.string()},
                             {{"SPOOL_DATABASE_URL", db.url()}});
  INFO(res.out << res.err);
  REQUIRE(res.exit_code == 0);
  CHECK_THAT(res.out, Catch::Contains("videos: 3 completed"));
  pg::connection conn{db.url()};
  auto urls = conn.exec("SELECT video_url FROM tasks WHERE state = 'completed' ORDER BY id");
  REQUIRE(urls.rows() == 3);
  for (int i = 0; i < urls.rows(); ++i) {
    auto file = urls.str(i, 0);
    CHECK(fs::path{file}.is_absolute());
    CHECK(file.rfind(data.string(), 0) == 0);
    auto probe = capture("ffprobe -v error -show_entries stream=codec_type -show_entries "
                         "format=duration -of default=noprint_wrappers=1 '"
                         + file + "'");
    CHECK_THAT(probe, Catch::Contains("codec_type=video"));
    CHECK_THAT(probe, Catch::Contains("codec_type=audio"));
    auto pos = probe.find("duration=");
    REQUIRE(pos != std::string::npos);
    CHECK(std::stod(probe.substr(pos + 9)) > 0);
  }
  // Intermediate media is tidied away without --keep; the MP4s stay.
  CHECK_FALSE(fs::exists(data / "tasks" / "1" / "asset_gen"));
  fs::remove_all(data);
}

TEST_CASE("the simulated demo finishes every video and shows retries", "[db][demo]") {
  test::fresh_database db;
  auto res = test::run_spool({"--log-level", "warn", "demo", "--simulate", "--videos", "24"},
                             {{"SPOOL_DATABASE_URL", db.url()}});
  INFO(res.out << res.err);
  REQUIRE(res.exit_code == 0);
  CHECK_THAT(res.out, Catch::Contains("videos: 24 completed"));
  // The summary's retries column (its header is always there) counts what
  // the database holds, and the injected failures made some.
  auto retries = summary_retries(res.out);
  pg::connection conn{db.url()};
  auto in_db = conn.exec("SELECT count(*) FROM stage_attempts WHERE outcome IN "
                         "('retry', 'snoozed', 'lost')")
                 .i64(0, 0);
  CHECK(retries > 0);
  CHECK(retries == in_db);
  CHECK(conn.exec("SELECT count(*) FROM stage_attempts WHERE outcome IN ('retry', 'snoozed')")
          .i64(0, 0)
        > 0);
}
