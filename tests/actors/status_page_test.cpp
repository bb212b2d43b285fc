// The status page in a real headless Chromium (Debian's chromium, driven by
// python3-selenium through chromium-driver): it loads against a running
// pipeline, a job awaiting approval is approved by clicking the page, the
// database shows the approval, and a screenshot is kept as an artifact
// (build/test-artifacts/status_page.png).

#include "tests/support/serve.hpp"
#include "tests/support/tools.hpp"
#include "tests/support/worker_fixture.hpp"

#include <filesystem>

using namespace spool;
using namespace spool::test;

TEST_CASE_METHOD(worker_fixture,
                 "the status page shows the pipeline and approves a job in headless Chromium",
                 "[db][api][page]") {
  auto cfg = temp_file(R"({"worker": {"idle_poll_s": 0.2, "heartbeat_interval_s": 0.5,
    "rescue_interval_s": 0.5, "shutdown_grace_s": 5, "lease_s": 3},
    "stages": [
      {"name": "storyboard", "executor": {"latency": {"dist": "fixed", "ms": 5}}},
      {"name": "video", "after": ["storyboard"], "approval": true,
       "executor": {"latency": {"dist": "fixed", "ms": 1500}}}]})");
  enqueue(cfg, 2);
  serve_process s{cfg, env};
  spool_process w{{"run", "--config", cfg}, env};
  REQUIRE(wait_for("SELECT count(*) FROM tasks WHERE state = 'awaiting_approval'", 2));
  auto first = text("SELECT min(id)::text FROM tasks");

  namespace fs = std::filesystem;
  auto dir = fs::current_path() / "test-artifacts";
  fs::create_directories(dir);
  auto shot = (dir / "status_page.png").string();
  fs::remove(shot);
  // Debian's python3, whose dist-packages hold python3-selenium.
  auto r = run_shell("/usr/bin/python3 "
                     + shell_word(SPOOL_SOURCE_DIR "/tests/page/approve_in_browser.py")
                     + " " + shell_word("http://127.0.0.1:" + std::to_string(s.port) + "/") + " "
                     + first + " " + shell_word(shot));
  INFO(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("awaiting_approval"));
  CHECK(text("SELECT approved::text || ' ' || reviewed_by FROM tasks WHERE id = " + first)
        == "true api:admin");
  CHECK(text("SELECT state::text FROM tasks WHERE id = " + first) == "completed");
  // The other job was not touched.
  CHECK(scalar("SELECT count(*) FROM tasks WHERE state = 'awaiting_approval'") == 1);
  auto png = read_text(shot);
  CHECK(png.size() > 10000);
  CHECK(png.starts_with("\x89PNG"));
  w.signal(SIGTERM);
  CHECK(w.wait(30) == 0);
}
