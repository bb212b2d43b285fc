// pickup_latency: a warm idle worker (pool of 10); 200 jobs enqueued 20 ms
// apart, each in its own transaction. Two latencies per job, to the
// executor's start (stage_attempts.started_at, the worker's clock on this
// same machine):
//
//  - from the enqueue call's return (its commit acknowledged): the queue's
//    own pickup delay;
//  - from just before the enqueue call: what a user who enqueues and waits
//    sees, the enqueue's round trip and commit (fsync) included.
//
// graphile-worker's latency test measures both the same way (performance.now()
// before addJob, after it returns, and at handler start): p50 0.69 ms from the
// return, 2.43 ms from the call, p99 3.17 ms from the return. Goal p50 <= 0.7
// ms, p99 <= 3 ms from the return. Excluded: nothing of the worker's path;
// the result's recording happens after the start and is not counted.
//
// Exits 1 when a job was not picked up, ran twice or has no sample.
//
//   ./dev.sh bench pickup_latency [jobs]

#include "bench/bench_support.hpp"
#include "tests/support/test_db.hpp"

#include <cstdlib>
#include <csignal>
#include <map>
#include <sstream>
#include <string>
#include <vector>
#include <thread>

using namespace spool;
using namespace std::chrono_literals;

namespace {

double epoch_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
    .count();
}

void print_line(const char* what, const std::vector<double>& ms) {
  std::printf("  %-34s p50 %6.2f ms, p90 %6.2f ms, p95 %6.2f ms, p99 %6.2f ms, max %7.2f ms\n",
              what, bench::percentile(ms, 0.5), bench::percentile(ms, 0.9),
              bench::percentile(ms, 0.95), bench::percentile(ms, 0.99),
              bench::percentile(ms, 1.0));
}

/// Polls `sql` (a count) until it reaches `n`; false after `timeout`.
bool wait_count(pg::connection& conn, const std::string& sql, int64_t n,
                std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (conn.exec(sql).i64(0, 0) < n) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

/// One pass: a warm idle worker logging at `log_level`, `jobs` jobs enqueued
/// 20 ms apart. What the bench reads afterwards.
struct pass_result {
  std::map<int64_t, std::pair<double, double>> sent; // task id -> (called, returned)
  std::string log;                                   // the worker's output
  bool ok = false;
};

pass_result run_pass(const std::string& url, int jobs, const std::string& log_level) {
  pass_result out;
  std::string json = "{";
  json += bench::bench_worker_json();
  json += R"(, "stages": [{"name": "a", "max_concurrent": 10,
      "executor": {"latency": {"dist": "fixed", "ms": 0}}}]})";
  auto cfg = test::temp_file(json);
  test::spool_process worker{{"--log-level", log_level, "run", "--config", cfg},
                             {{"SPOOL_DATABASE_URL", url}}};
  pg::connection conn{url};
  if (!wait_count(conn, "SELECT count(*) FROM workers", 1, 30s)) {
    bench::error("the worker did not register within 30 s:\n%s", worker.output().c_str());
    return out;
  }
  std::this_thread::sleep_for(1s); // warm: connected, listening, idle

  store::store q{conn};
  for (int i = 0; i < jobs; ++i) {
    store::new_task t;
    t.channel_id = "ch" + std::to_string(i % 7);
    double called = epoch_s();
    auto id = q.enqueue({t}, {{"a", {}, false, 3}}).at(0).task_id;
    out.sent[id] = {called, epoch_s()};
    std::this_thread::sleep_for(20ms);
  }
  if (!wait_count(conn, "SELECT count(*) FROM stage_runs WHERE state = 'done'", jobs, 30s))
    bench::error("not every job was done 30 s after the last enqueue");
  worker.signal(SIGTERM);
  if (int code = worker.wait(30); code != 0)
    bench::error("worker exited %d:\n%s", code, worker.output().c_str());
  out.log = worker.output();
  std::remove(cfg.c_str());
  out.ok = true;
  return out;
}

/// The "step <name> <key> <us>" lines of a worker's trace log
/// (actors/trace.hpp), in order.
struct step {
  std::string name, key;
  double at_s;
};

std::vector<step> read_steps(const std::string& log) {
  std::vector<step> out;
  std::istringstream in{log};
  for (std::string line; std::getline(in, line);) {
    auto p = line.find(" step ");
    if (p == std::string::npos)
      continue;
    std::istringstream f{line.substr(p + 6)};
    step s;
    long long us = 0;
    if (f >> s.name >> s.key >> us) {
      s.at_s = static_cast<double>(us) / 1e6;
      out.push_back(std::move(s));
    }
  }
  return out;
}

/// Where each job's pickup time went, from a traced pass: for every run, the
/// last stage-keyed step of each kind before the pool had the run.
void print_breakdown(pg::connection& conn, const pass_result& pass) {
  auto steps = read_steps(pass.log);
  auto res = conn.exec("SELECT r.id, r.task_id, extract(epoch FROM r.claimed_at)::float8 "
                       "FROM stage_runs r");
  const char* names[] = {"wakeup", "claim", "claim_sql", "claim_sql_done", "claimed", "start"};
  // (The NOTIFY may reach the worker before the enqueue's commit reaches the
  // client: the first gap can be negative.)
  const char* labels[] = {"  enqueue return -> NOTIFY at worker:", "  NOTIFY -> pool asks to claim:",
                          "  pool asks -> claimer calls SQL:", "  the claim SQL call:",
                          "  SQL returns -> pool has the run:", "  pool has it -> executor start:"};
  std::vector<double> gaps[6], db_claim;
  int complete = 0;
  for (int i = 0; i < res.rows(); ++i) {
    auto run = std::to_string(res.i64(i, 0));
    auto sent = pass.sent.find(res.i64(i, 1));
    if (sent == pass.sent.end())
      continue;
    // The run-keyed steps, then the stage-keyed ones just before "claimed".
    double at[6] = {0, 0, 0, 0, 0, 0};
    for (auto& s : steps) {
      if (s.key == run && s.name == "claimed" && at[4] == 0)
        at[4] = s.at_s;
      if (s.key == run && s.name == "start" && at[5] == 0)
        at[5] = s.at_s;
    }
    if (at[4] == 0 || at[5] == 0)
      continue;
    for (auto& s : steps)
      for (int k = 0; k < 4; ++k)
        if (s.key == "a" && s.name == names[k] && s.at_s <= at[4] && s.at_s > at[k])
          at[k] = s.at_s;
    if (at[0] < sent->second.first)
      continue; // a wake-up from before this enqueue: the claim found the run otherwise
    double prev = sent->second.second;
    for (int k = 0; k < 6; ++k) {
      gaps[k].push_back((at[k] - prev) * 1000.0);
      prev = at[k];
    }
    db_claim.push_back((res.f64(i, 2) - sent->second.second) * 1000.0);
    ++complete;
  }
  std::printf("where the time goes (a second pass of %zu jobs with the worker logging each "
              "step at trace level, which costs a little; %d jobs traced end to end):\n",
              pass.sent.size(), complete);
  for (int k = 0; k < 6; ++k)
    print_line(labels[k], gaps[k]);
  print_line("  (enqueue return -> claim txn start)", db_claim);
}

} // namespace

int main(int argc, char** argv) {
  int jobs = argc > 1 ? std::atoi(argv[1]) : 200;
  test::fresh_database db;
  auto pass = run_pass(db.url(), jobs, "warn");
  if (!pass.ok)
    return bench::exit_status();
  pg::connection conn{db.url()};
  auto& sent = pass.sent;
  auto res = conn.exec("SELECT a.task_id, extract(epoch FROM a.started_at)::float8, "
                       "extract(epoch FROM r.claimed_at)::float8 FROM stage_attempts a "
                       "JOIN stage_runs r ON r.id = a.stage_run_id WHERE a.attempt = 1");
  std::vector<double> from_return, from_call, to_claim;
  for (int i = 0; i < res.rows(); ++i) {
    auto it = sent.find(res.i64(i, 0));
    if (it == sent.end()) {
      bench::error("an attempt of task %lld, which this bench did not enqueue",
                   static_cast<long long>(res.i64(i, 0)));
      continue;
    }
    auto [called, returned] = it->second;
    from_return.push_back((res.f64(i, 1) - returned) * 1000.0);
    from_call.push_back((res.f64(i, 1) - called) * 1000.0);
    to_claim.push_back((res.f64(i, 2) - returned) * 1000.0);
  }
  if (static_cast<int>(from_return.size()) != jobs)
    bench::error("%zu latency samples for %d jobs", from_return.size(), jobs);
  bench::check_all_done_once(conn, jobs, "pickup_latency");

  std::printf("pickup_latency: %zu of %d jobs picked up, 20 ms apart, idle worker of 10; "
              "to executor start:\n",
              from_return.size(), jobs);
  print_line("from enqueue return (commit):", from_return);
  print_line("from enqueue call (commit incl.):", from_call);
  print_line("  enqueue return -> claim start:", to_claim);
  std::vector<double> enqueue_ms;
  for (auto& [id, t] : sent)
    enqueue_ms.push_back((t.second - t.first) * 1000.0);
  print_line("  the enqueue call itself:", enqueue_ms);

  test::fresh_database traced_db;
  auto traced = run_pass(traced_db.url(), std::min(jobs, 60), "trace");
  if (traced.ok) {
    pg::connection tconn{traced_db.url()};
    print_breakdown(tconn, traced);
  }
  return bench::exit_status();
}
