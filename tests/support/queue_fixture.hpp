#pragma once
// A fresh migrated database plus a store on one connection, and helpers to
// enqueue and claim in tests.

#include "runtime/pg/connection.hpp"
#include "runtime/store/store.hpp"
#include "tests/support/test_db.hpp"
#include "tests/support/wait.hpp"

#include <string>
#include <vector>

namespace spool::test {

struct queue_fixture {
  fresh_database db;
  pg::connection conn{db.url()};
  store::store q{conn};

  static std::vector<store::pipeline_stage> single_stage(const std::string& name = "s") {
    return {{name, {}, false, 3}};
  }

  int64_t enqueue_one(const std::string& channel,
                      store::priority p = store::priority::normal,
                      const std::vector<store::pipeline_stage>& pipeline = single_stage()) {
    store::new_task t;
    t.channel_id = channel;
    t.prio = p;
    return q.enqueue({t}, pipeline).at(0).task_id;
  }

  int64_t scalar(const std::string& sql) { return conn.exec(sql).i64(0, 0); }
  std::string text(const std::string& sql) { return conn.exec(sql).str(0, 0); }

  /// Waits until `sql` (a count) reaches at least `n`; false on timeout.
  bool wait_for(const std::string& sql, int64_t n, double timeout_s = 30) {
    return eventually([&] { return scalar(sql) >= n; }, timeout_s);
  }
};

} // namespace spool::test
