#pragma once
// A fresh database and helpers for tests that run real `spool run`
// processes against it: enqueue through the CLI, read counts, wait on a
// condition.

#include "runtime/pg/connection.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/test_db.hpp"
#include "tests/support/wait.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <string>
#include <thread>

namespace spool::test {

struct worker_fixture {
  fresh_database db;
  pg::connection conn{db.url()};
  std::map<std::string, std::string> env{{"SPOOL_DATABASE_URL", db.url()}};

  /// Enqueues `n` videos over `channels` channels through the CLI, with the
  /// pipeline of `config`; the i-th gets `payload(i)` (a JSON object).
  template <class F>
  void enqueue_each(const std::string& config, int n, int channels, F&& payload) {
    std::string lines;
    for (int i = 0; i < n; ++i)
      lines += R"({"channel_id":"ch)" + std::to_string(i % channels) + R"(","payload":)"
               + payload(i) + "}\n";
    auto res = run_spool({"enqueue", "--config", config, "--file", "-"}, env, lines);
    REQUIRE(res.exit_code == 0);
  }

  void enqueue(const std::string& config, int n, int channels = 3,
               const std::string& payload = "{}") {
    enqueue_each(config, n, channels, [&](int) { return payload; });
  }

  int64_t scalar(const std::string& sql) { return conn.exec(sql).i64(0, 0); }
  std::string text(const std::string& sql) { return conn.exec(sql).str(0, 0); }

  /// Most attempts of `stage` that were executing at the same moment,
  /// computed from stage_attempts intervals (ends sort before starts).
  int64_t max_overlap(const std::string& stage) {
    return conn
      .query("SELECT coalesce(max(c), 0) FROM (SELECT sum(d) OVER (ORDER BY t, d "
             "ROWS UNBOUNDED PRECEDING) AS c FROM (SELECT started_at AS t, 1 AS d "
             "FROM stage_attempts WHERE stage = $1 UNION ALL SELECT finished_at, -1 "
             "FROM stage_attempts WHERE stage = $1 AND finished_at IS NOT NULL) e) x",
             stage)
      .i64(0, 0);
  }

  /// Waits until `sql` (a count) reaches at least `n`; false on timeout.
  bool wait_for(const std::string& sql, int64_t n, double timeout_s = 30) {
    return eventually([&] { return scalar(sql) >= n; }, timeout_s);
  }
};

/// A config file with short worker intervals and the given stages (JSON
/// array elements); `worker_extra` adds worker keys (", \"key\": value").
inline std::string worker_config(const std::string& stages, double lease_s = 3,
                                 double grace_s = 1, const std::string& worker_extra = "") {
  std::string text = R"({"worker": {"idle_poll_s": 0.2, "heartbeat_interval_s": 0.5,
    "rescue_interval_s": 0.5, "shutdown_grace_s": )";
  text += std::to_string(grace_s);
  text += R"(, "lease_s": )";
  text += std::to_string(lease_s);
  text += worker_extra;
  text += R"(}, "stages": [)";
  text += stages;
  text += "]}";
  return temp_file(text);
}

} // namespace spool::test
