// Budgets held across real workers: a hard budget that three `spool run`
// processes claiming at once never overshoot, and paid work that resumes
// when the budget is raised in the configuration file they follow.

#include "tests/support/worker_fixture.hpp"

#include <atomic>
#include <csignal>
#include <fstream>
#include <memory>

using namespace spool;
using namespace spool::test;

namespace {

std::string budget_config(double hard_usd) {
  return R"({"worker": {"idle_poll_s": 0.2, "heartbeat_interval_s": 0.3,
    "rescue_interval_s": 0.3, "shutdown_grace_s": 5, "lease_s": 2},
    "budgets": {"soft_usd": 0, "hard_usd": )" + std::to_string(hard_usd) + R"(},
    "stages": [{"name": "video", "max_concurrent": 4, "price": {"per_call": 0.5},
      "executor": {"latency": {"dist": "fixed", "ms": 50}, "cost": 0.5}}]})";
}

} // namespace

TEST_CASE_METHOD(worker_fixture,
                 "three workers never take reserved-or-spent money past a hard budget of 10 "
                 "USD, and go on when the file raises it",
                 "[db][worker][cost]") {
  auto cfg = temp_file(budget_config(10));
  enqueue(cfg, 50); // estimated through the CLI at 0.50 each
  REQUIRE(scalar("SELECT count(*) FROM stage_runs WHERE est_cost = 0.5") == 50);
  std::vector<std::unique_ptr<spool_process>> ws;
  for (int i = 0; i < 3; ++i)
    ws.push_back(std::make_unique<spool_process>(
      std::vector<std::string>{"run", "--config", cfg}, env));

  auto money = [&] {
    return conn
      .exec("SELECT coalesce(sum(spent + reserved), 0)::float8 FROM spool_money "
            "WHERE scope = 'total'")
      .f64(0, 0);
  };
  double worst = 0;
  auto done = [&] { return scalar("SELECT count(*) FROM stage_runs WHERE state = 'done'"); };
  // Sample until 20 are done and a while after: never more than 10 USD.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (done() < 20 && std::chrono::steady_clock::now() < until) {
    worst = std::max(worst, money());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(done() == 20);
  for (int i = 0; i < 100; ++i) {
    worst = std::max(worst, money());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(worst <= 10.0 + 1e-9);
  CHECK(done() == 20);
  CHECK(scalar("SELECT count(*) FROM stage_runs WHERE state = 'ready'") == 30);
  CHECK(scalar("SELECT count(*) FROM spool_provider_events WHERE kind = 'budget_exhausted'")
        == 1);

  // Raised in the file the workers follow: the held stage wakes at once.
  {
    std::ofstream out{cfg, std::ios::trunc};
    out << budget_config(30);
  }
  CHECK(wait_for("SELECT count(*) FROM stage_runs WHERE state = 'done'", 50, 60));
  CHECK(conn.exec("SELECT spent::float8 FROM spool_money WHERE scope = 'total'").f64(0, 0)
        == Approx(25));
  CHECK(conn.exec("SELECT reserved::float8 FROM spool_money WHERE scope = 'total'").f64(0, 0)
        == Approx(0));
  for (auto& w : ws)
    w->signal(SIGTERM);
  for (auto& w : ws)
    CHECK(w->wait(30) == 0);
}
