// store_throughput: single-stage runs through claim + batched complete, no
// executor, on a fresh database of the local cluster (fsync on), modelled on
// how a supervisor drives the queue:
//
//  - each supervisor (one worker id) has a claim connection that claims by
//    idle credit (10 or 32 runs per call) and a record connection that
//    flushes, in one call, every outcome that finished since its last flush
//    (capped at --flush-max, default 500); claiming goes on meanwhile;
//  - a supervisor holds at most --window unrecorded outcomes (default 512):
//    past that its claimer waits for the recorder, as a pool's credit would.
//
// In the same run it measures a bare baseline: a plain table, one statement
// per transaction (claim 50 rows FOR UPDATE SKIP LOCKED and mark them done),
// with as many threads as the Spool run has connections. Each round runs
// the baseline and Spool back to back; the medians over rounds and the
// ratio Spool / baseline are printed (compare ratios measured in one run:
// this box is shared and absolute numbers drift).
//
//   ./dev.sh bench store_throughput [runs] [supervisors] [rounds]
//   defaults: 20000 runs, 2 supervisors (4 connections), 5 rounds

#include "runtime/pg/connection.hpp"
#include "runtime/store/store.hpp"
#include "tests/support/test_db.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace spool;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  int runs = 20'000;
  int supervisors = 2;
  int rounds = 5;
  size_t window = 512;
  size_t flush_max = 500;
};

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  auto n = xs.size();
  return n % 2 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
}

/// Busy and total jiffies of the whole machine, from /proc/stat: the share
/// of both cores a phase used tells CPU-bound from latency-bound.
struct cpu_sample {
  double busy = 0;
  double total = 0;
  static cpu_sample now() {
    std::ifstream in{"/proc/stat"};
    std::string cpu;
    double user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    in >> cpu >> user >> nice >> sys >> idle >> iowait >> irq >> softirq >> steal;
    cpu_sample s;
    s.busy = user + nice + sys + irq + softirq + steal;
    s.total = s.busy + idle + iowait;
    return s;
  }
  /// Busy share since `before`, in percent.
  double busy_since(const cpu_sample& before) const {
    auto total_delta = total - before.total;
    return total_delta > 0 ? 100.0 * (busy - before.busy) / total_delta : 0;
  }
};

// -- the bare baseline ---------------------------------------------------------

double bare_rate(const std::string& url, int runs, int threads) {
  {
    pg::connection conn{url};
    conn.exec_script(R"(
      DROP TABLE IF EXISTS bare_jobs;
      CREATE TABLE bare_jobs (
        id          BIGSERIAL PRIMARY KEY,
        state       TEXT NOT NULL DEFAULT 'ready',
        payload     JSONB NOT NULL DEFAULT '{}',
        created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
        finished_at TIMESTAMPTZ);
      CREATE INDEX bare_jobs_ready_idx ON bare_jobs (id) WHERE state = 'ready';)");
    conn.exec("INSERT INTO bare_jobs (payload) SELECT '{}' FROM generate_series(1, $1::int)",
              {pg::to_param(runs)});
    conn.exec("VACUUM ANALYZE bare_jobs");
  }
  std::atomic<int64_t> done{0};
  auto start = clock_type::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      pg::connection c{url};
      for (;;) {
        auto n = c.exec_prepared("WITH picked AS (SELECT id FROM bare_jobs WHERE state = 'ready' "
                                 "ORDER BY id LIMIT 50 FOR UPDATE SKIP LOCKED) "
                                 "UPDATE bare_jobs j SET state = 'done', finished_at = now() "
                                 "FROM picked WHERE j.id = picked.id")
                   .affected();
        if (n == 0)
          break;
        done += n;
      }
    });
  for (auto& th : pool)
    th.join();
  double secs = seconds_since(start);
  if (done != runs)
    std::fprintf(stderr, "ERROR: baseline did %lld of %d\n", static_cast<long long>(done.load()),
                 runs);
  return runs / secs;
}

// -- Spool ---------------------------------------------------------------------

struct spool_result {
  double rate = 0;
  double cpu = 0;
  double claim_calls = 0;
  double record_calls = 0;
  double claim_us = 0;  // mean latency of a claim call
  double record_us = 0; // and of a record call
};

/// One supervisor: a claimer and a recorder sharing a window of outcomes.
class supervisor {
public:
  supervisor(const std::string& url, std::string worker, int credit, const options& opt)
    : url_(url), worker_(std::move(worker)), credit_(credit), opt_(opt) {
  }

  void start() {
    claimer_ = std::thread{[this] { claim_loop(); }};
    recorder_ = std::thread{[this] { record_loop(); }};
  }

  void join() {
    claimer_.join();
    recorder_.join();
  }

  int64_t claim_calls = 0;
  int64_t record_calls = 0;
  double claim_secs = 0;  // time spent in claim calls
  double record_secs = 0; // and in record calls

private:
  void claim_loop() {
    pg::connection c{url_};
    store::store q{c};
    for (;;) {
      {
        std::unique_lock lock{mu_};
        room_.wait(lock, [&] { return pending_.size() + credit_ <= opt_.window; });
      }
      auto t0 = clock_type::now();
      auto got = q.claim("s", credit_, worker_, 60s);
      claim_secs += seconds_since(t0);
      ++claim_calls;
      std::lock_guard lock{mu_};
      for (auto& r : got)
        pending_.push_back({r.run_id, r.attempt, store::record_kind::ok, 0ms, "{}", 0, {}, {}});
      if (got.empty())
        claiming_ = false;
      ready_.notify_one();
      if (!claiming_)
        return;
    }
  }

  void record_loop() {
    pg::connection c{url_};
    store::store q{c};
    std::vector<store::outcome_record> batch;
    for (;;) {
      batch.clear();
      {
        std::unique_lock lock{mu_};
        ready_.wait(lock, [&] { return !pending_.empty() || !claiming_; });
        if (pending_.empty())
          return;
        while (!pending_.empty() && batch.size() < opt_.flush_max) {
          batch.push_back(std::move(pending_.front()));
          pending_.pop_front();
        }
      }
      room_.notify_one();
      auto t0 = clock_type::now();
      auto res = q.record(worker_, batch);
      record_secs += seconds_since(t0);
      ++record_calls;
      for (auto& r : res)
        if (!r.accepted)
          std::fprintf(stderr, "ERROR: outcome of run %lld refused\n",
                       static_cast<long long>(r.run_id));
    }
  }

  std::string url_;
  std::string worker_;
  size_t credit_;
  const options& opt_;
  std::thread claimer_;
  std::thread recorder_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::condition_variable room_;
  std::deque<store::outcome_record> pending_;
  bool claiming_ = true;
};

spool_result spool_rate(const std::string& url, int credit, const options& opt) {
  {
    pg::connection conn{url};
    store::store q{conn};
    for (int from = 0; from < opt.runs; from += 50'000) {
      std::vector<store::new_task> tasks(static_cast<size_t>(std::min(50'000, opt.runs - from)));
      for (size_t i = 0; i < tasks.size(); ++i)
        tasks[i].channel_id = "ch" + std::to_string((from + i) % 100);
      q.enqueue(tasks, {{"s", {}, false, 3}});
    }
    conn.exec("VACUUM ANALYZE");
  }
  std::vector<std::unique_ptr<supervisor>> sups;
  for (int s = 0; s < opt.supervisors; ++s)
    sups.push_back(std::make_unique<supervisor>(url, "bench-" + std::to_string(s), credit, opt));
  auto cpu0 = cpu_sample::now();
  auto start = clock_type::now();
  for (auto& s : sups)
    s->start();
  for (auto& s : sups)
    s->join();
  spool_result out;
  out.rate = opt.runs / seconds_since(start);
  out.cpu = cpu_sample::now().busy_since(cpu0);
  double claim_secs = 0, record_secs = 0;
  for (auto& s : sups) {
    out.claim_calls += static_cast<double>(s->claim_calls);
    out.record_calls += static_cast<double>(s->record_calls);
    claim_secs += s->claim_secs;
    record_secs += s->record_secs;
  }
  out.claim_us = 1e6 * claim_secs / out.claim_calls;
  out.record_us = 1e6 * record_secs / out.record_calls;
  pg::connection conn{url};
  auto done = conn.exec("SELECT count(*) FROM stage_runs WHERE state = 'done'").i64(0, 0);
  auto completed = conn.exec("SELECT count(*) FROM tasks WHERE state = 'completed'").i64(0, 0);
  if (done != opt.runs || completed != opt.runs)
    std::fprintf(stderr, "ERROR: %lld runs done, %lld tasks completed, of %d\n",
                 static_cast<long long>(done), static_cast<long long>(completed), opt.runs);
  return out;
}

} // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  options opt;
  if (argc > 1)
    opt.runs = std::atoi(argv[1]);
  if (argc > 2)
    opt.supervisors = std::atoi(argv[2]);
  if (argc > 3)
    opt.rounds = std::atoi(argv[3]);
  int connections = 2 * opt.supervisors;
  std::printf("store_throughput: %d runs; %d supervisors (claim + record connection each); "
              "baseline: %d threads x (claim 50 + done) per transaction; %d rounds\n",
              opt.runs, opt.supervisors, connections, opt.rounds);
  for (int credit : {10, 32}) {
    std::vector<double> bare, ours, ratios, per_record;
    for (int round = 0; round < opt.rounds; ++round) {
      test::fresh_database db;
      double b = bare_rate(db.url(), opt.runs, connections);
      auto s = spool_rate(db.url(), credit, opt);
      bare.push_back(b);
      ours.push_back(s.rate);
      ratios.push_back(s.rate / b);
      per_record.push_back(opt.runs / s.record_calls);
      std::printf("  credit %2d round %d: baseline %7.0f/s  spool %7.0f runs/s  ratio %.2f  "
                  "(%.0f claims of %.0f us, %.0f records of %.0f runs in %.0f us; "
                  "machine cpu %.0f%%)\n",
                  credit, round + 1, b, s.rate, s.rate / b, s.claim_calls, s.claim_us,
                  s.record_calls, opt.runs / s.record_calls, s.record_us, s.cpu);
      std::fflush(stdout);
    }
    std::printf("credit %2d median: baseline %7.0f/s  spool %7.0f runs/s  ratio %.2f\n", credit,
                median(bare), median(ours), median(ratios));
  }
}
