// store_throughput: single-stage runs through claim + batched complete, no
// executor, on a fresh database of the local cluster (fsync on), modelled on
// how a supervisor drives the queue:
//
//  - each supervisor (one worker id) has a claim connection that claims by
//    idle credit (10 or 32 runs per call) and a record connection that
//    flushes, in one call, every outcome that finished since its last flush
//    (at most 500); claiming goes on meanwhile;
//  - a supervisor holds at most 512 unrecorded outcomes: past that its
//    claimer waits for the recorder, as a pool's credit would.
//
// In the same run it measures a bare baseline: a plain table, one statement
// per transaction (claim 50 rows FOR UPDATE SKIP LOCKED and mark them done),
// with as many threads as the Spool run has connections. Each round runs
// the baseline and Spool back to back on one fresh database; the medians
// over rounds and the ratio Spool / baseline are printed (compare ratios
// measured in one run: this box is shared and absolute numbers drift).
// Besides runs/s, each line shows the server CPU a run costs (read from
// /proc for the run's own backends, so other load on the box does not count;
// 10 ms ticks), split into the claim and the record connections, the client's
// CPU, call counts and latencies, and the WAL written per run.
//
//   ./dev.sh bench store_throughput [runs] [supervisors] [rounds]
//   defaults: 20000 runs, 2 supervisors (4 connections), 5 rounds

#include "runtime/pg/connection.hpp"
#include "runtime/store/store.hpp"
#include "tests/support/test_db.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
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

/// CPU seconds (user + system) a server backend has used so far, from
/// /proc/<pid>/stat (the cluster is local): what one connection costs the
/// server, whatever else runs on the machine.
double backend_cpu_s(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  std::getline(in, line);
  auto close = line.rfind(')'); // the command name may contain spaces
  if (close == std::string::npos)
    return 0;
  std::istringstream rest{line.substr(close + 2)};
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14)
      utime = std::stod(field);
    if (i == 15)
      stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

int backend_pid(pg::connection& c) {
  return static_cast<int>(c.exec("SELECT pg_backend_pid()").i64(0, 0));
}

/// CPU seconds this process (the client side) has used so far.
double client_cpu_s() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto secs = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  return secs(ru.ru_utime) + secs(ru.ru_stime);
}

/// Server CPU seconds used by a set of backends between two readings.
struct backend_cpu {
  std::vector<int> pids;
  std::vector<double> at_start;
  void start() {
    at_start.clear();
    for (int pid : pids)
      at_start.push_back(backend_cpu_s(pid));
  }
  double used() const {
    double total = 0;
    for (size_t i = 0; i < pids.size(); ++i)
      total += backend_cpu_s(pids[i]) - at_start[i];
    return total;
  }
};

/// What one measured run cost.
struct measured {
  double rate = 0;           // runs/s
  double server_us = 0;      // server CPU per run (the run's backends)
  double client_us = 0;      // client CPU per run (this process)
};

// -- the bare baseline ---------------------------------------------------------

measured bare_rate(const std::string& url, int runs, int threads) {
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
  std::vector<std::unique_ptr<pg::connection>> conns;
  backend_cpu server;
  for (int t = 0; t < threads; ++t) {
    conns.push_back(std::make_unique<pg::connection>(url));
    server.pids.push_back(backend_pid(*conns.back()));
  }
  std::atomic<int64_t> done{0};
  server.start();
  double client0 = client_cpu_s();
  auto start = clock_type::now();
  std::vector<std::thread> pool;
  for (auto& conn : conns)
    pool.emplace_back([&, c = conn.get()] {
      for (;;) {
        auto n = c->exec_prepared("WITH picked AS (SELECT id FROM bare_jobs WHERE state = 'ready' "
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
  measured m;
  m.rate = runs / seconds_since(start);
  m.server_us = 1e6 * server.used() / runs;
  m.client_us = 1e6 * (client_cpu_s() - client0) / runs;
  if (done != runs)
    std::fprintf(stderr, "ERROR: baseline did %lld of %d\n", static_cast<long long>(done.load()),
                 runs);
  return m;
}

// -- Spool ---------------------------------------------------------------------

struct spool_result : measured {
  double claim_cpu_us = 0;  // server CPU per run on the claim connections
  double record_cpu_us = 0; // and on the record connections
  double cpu = 0;           // busy share of the whole machine, percent
  double wal_per_run = 0; // bytes of WAL written per run
  double claim_calls = 0;
  double record_calls = 0;
  double claim_us = 0;  // mean latency of a claim call
  double record_us = 0; // and of a record call
};

/// One supervisor: a claimer and a recorder sharing a window of outcomes.
class supervisor {
public:
  supervisor(const std::string& url, std::string worker, int credit, const options& opt)
    : claim_conn_(url), record_conn_(url), worker_(std::move(worker)), credit_(credit),
      opt_(opt) {
  }

  /// The server backends of its claim and record connections.
  int claim_pid() { return backend_pid(claim_conn_); }
  int record_pid() { return backend_pid(record_conn_); }

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
    store::store q{claim_conn_};
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
        pending_.push_back(store::outcome_record::for_claim(r, store::record_kind::ok));
      if (got.empty())
        claiming_ = false;
      ready_.notify_one();
      if (!claiming_)
        return;
    }
  }

  void record_loop() {
    store::store q{record_conn_};
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

  pg::connection claim_conn_;
  pg::connection record_conn_;
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
  backend_cpu claims, records;
  for (int s = 0; s < opt.supervisors; ++s) {
    sups.push_back(std::make_unique<supervisor>(url, "bench-" + std::to_string(s), credit, opt));
    claims.pids.push_back(sups.back()->claim_pid());
    records.pids.push_back(sups.back()->record_pid());
  }
  auto wal_lsn = [&] {
    pg::connection c{url};
    return c.exec("SELECT pg_current_wal_lsn()::text").str(0, 0);
  };
  auto lsn0 = wal_lsn();
  auto cpu0 = cpu_sample::now();
  claims.start();
  records.start();
  double client0 = client_cpu_s();
  auto start = clock_type::now();
  for (auto& s : sups)
    s->start();
  for (auto& s : sups)
    s->join();
  spool_result out;
  out.rate = opt.runs / seconds_since(start);
  out.cpu = cpu_sample::now().busy_since(cpu0);
  out.claim_cpu_us = 1e6 * claims.used() / opt.runs;
  out.record_cpu_us = 1e6 * records.used() / opt.runs;
  out.server_us = out.claim_cpu_us + out.record_cpu_us;
  out.client_us = 1e6 * (client_cpu_s() - client0) / opt.runs;
  {
    pg::connection c{url};
    out.wal_per_run = static_cast<double>(
                        c.exec("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint",
                               {lsn0})
                          .i64(0, 0))
                      / opt.runs;
  }
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
    std::vector<double> bare, ours, ratios, bare_cpu, our_cpu, cpu_ratios;
    for (int round = 0; round < opt.rounds; ++round) {
      test::fresh_database db;
      auto b = bare_rate(db.url(), opt.runs, connections);
      auto s = spool_rate(db.url(), credit, opt);
      bare.push_back(b.rate);
      ours.push_back(s.rate);
      ratios.push_back(s.rate / b.rate);
      bare_cpu.push_back(b.server_us);
      our_cpu.push_back(s.server_us);
      cpu_ratios.push_back(s.server_us / b.server_us);
      std::printf("  credit %2d round %d: baseline %6.0f/s, spool %6.0f runs/s: ratio %.2f | "
                  "server cpu/run %4.1f us (claim %4.1f + record %4.1f) vs %4.1f us, "
                  "client %3.1f us | %.0f claims of %.0f us, %.0f records of %.0f runs in "
                  "%.0f us | machine busy %.0f%%, WAL %.0f B/run\n",
                  credit, round + 1, b.rate, s.rate, s.rate / b.rate, s.server_us,
                  s.claim_cpu_us, s.record_cpu_us, b.server_us, s.client_us, s.claim_calls,
                  s.claim_us, s.record_calls, opt.runs / s.record_calls, s.record_us, s.cpu,
                  s.wal_per_run);
      std::fflush(stdout);
    }
    std::printf("credit %2d median: baseline %6.0f/s, spool %6.0f runs/s, ratio %.2f; "
                "server cpu/run %.1f us vs %.1f us (x%.1f)\n",
                credit, median(bare), median(ours), median(ratios), median(our_cpu),
                median(bare_cpu), median(cpu_ratios));
  }
}
