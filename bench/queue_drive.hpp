#pragma once
// What store_throughput and noop_throughput share: supervisors driving a
// queue through claim and record connections (drive), and the raw baseline
// of this design on this database (bare_rate): a bare table claimed in
// batches with a lease in one transaction and completed in another. See
// store_throughput.cpp for what each measures. Included by one file of each
// bench executable.

#include "bench/bench_support.hpp"
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
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>


namespace spool::bench::queue {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;


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

// -- supervisors: the same for the baseline and Spool -------------------------

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

/// A run a supervisor holds: claimed, its outcome not yet recorded.
struct held {
  int64_t run_id = 0;
  int attempt = 0;
  int64_t lease_token = 0; // Spool's fence; the baseline has none
};

/// How a supervisor talks to one queue: a claim of up to `credit` runs, and
/// the recording of a batch of finished runs (returns how many were refused).
struct queue_ops {
  std::function<std::vector<held>(pg::connection&, const std::string& worker, int credit)> claim;
  std::function<int(pg::connection&, const std::string& worker, const std::vector<held>&)>
    record;
};

/// One supervisor: a claimer and a recorder sharing a window of outcomes.
class supervisor {
public:
  supervisor(const std::string& url, std::string worker, int credit, const options& opt,
             const queue_ops& ops)
    : claim_conn_(url), record_conn_(url), worker_(std::move(worker)), credit_(credit),
      opt_(opt), ops_(ops) {
  }

  /// The server backends of its claim and record connections.
  int claim_pid() { return backend_pid(claim_conn_); }
  int record_pid() { return backend_pid(record_conn_); }
  pg::connection& claim_connection() { return claim_conn_; }

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
  int64_t claimed = 0;
  int64_t refused = 0;
  double claim_secs = 0;  // time spent in claim calls
  double record_secs = 0; // and in record calls

private:
  void claim_loop() {
    for (;;) {
      {
        std::unique_lock lock{mu_};
        room_.wait(lock, [&] { return pending_.size() + credit_ <= opt_.window; });
      }
      auto t0 = clock_type::now();
      auto got = ops_.claim(claim_conn_, worker_, static_cast<int>(credit_));
      claim_secs += seconds_since(t0);
      ++claim_calls;
      claimed += static_cast<int64_t>(got.size());
      std::lock_guard lock{mu_};
      pending_.insert(pending_.end(), got.begin(), got.end());
      if (got.empty())
        claiming_ = false;
      ready_.notify_one();
      if (!claiming_)
        return;
    }
  }

  void record_loop() {
    std::vector<held> batch;
    for (;;) {
      batch.clear();
      {
        std::unique_lock lock{mu_};
        ready_.wait(lock, [&] { return !pending_.empty() || !claiming_; });
        if (pending_.empty())
          return;
        while (!pending_.empty() && batch.size() < opt_.flush_max) {
          batch.push_back(pending_.front());
          pending_.pop_front();
        }
      }
      room_.notify_one();
      auto t0 = clock_type::now();
      refused += ops_.record(record_conn_, worker_, batch);
      record_secs += seconds_since(t0);
      ++record_calls;
    }
  }

  pg::connection claim_conn_;
  pg::connection record_conn_;
  std::string worker_;
  size_t credit_;
  const options& opt_;
  const queue_ops& ops_;
  std::thread claimer_;
  std::thread recorder_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::condition_variable room_;
  std::deque<held> pending_;
  bool claiming_ = true;
};

/// Runs `opt.supervisors` supervisors over `ops` until the queue is empty;
/// `prepare_claim` runs once on each claim connection before the clock.
spool_result drive(const std::string& url, int credit, const options& opt, const queue_ops& ops,
                   const char* what,
                   const std::function<void(pg::connection&)>& prepare_claim = {}) {
  std::vector<std::unique_ptr<supervisor>> sups;
  backend_cpu claims, records;
  for (int s = 0; s < opt.supervisors; ++s) {
    sups.push_back(
      std::make_unique<supervisor>(url, "bench-" + std::to_string(s), credit, opt, ops));
    claims.pids.push_back(sups.back()->claim_pid());
    records.pids.push_back(sups.back()->record_pid());
    if (prepare_claim)
      prepare_claim(sups.back()->claim_connection());
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
  int64_t claimed = 0, refused = 0;
  for (auto& s : sups) {
    out.claim_calls += static_cast<double>(s->claim_calls);
    out.record_calls += static_cast<double>(s->record_calls);
    claim_secs += s->claim_secs;
    record_secs += s->record_secs;
    claimed += s->claimed;
    refused += s->refused;
  }
  out.claim_us = 1e6 * claim_secs / out.claim_calls;
  out.record_us = 1e6 * record_secs / out.record_calls;
  if (claimed != opt.runs)
    bench::error("%s: %lld runs claimed, of %d", what, static_cast<long long>(claimed), opt.runs);
  if (refused != 0)
    bench::error("%s: %lld outcomes refused", what, static_cast<long long>(refused));
  return out;
}

// -- the raw baseline ----------------------------------------------------------

/// Whether spool_claim commits asynchronously (synchronous_commit off for its
/// transaction): the baseline's claim then does too.
bool spool_claims_async(const std::string& url) {
  pg::connection conn{url};
  return conn
           .exec("SELECT count(*) FROM pg_proc WHERE proname = 'spool_claim' AND prosrc ~ "
                 "$$synchronous_commit'\\s*,\\s*'off'$$")
           .i64(0, 0)
         > 0;
}

spool_result bare_rate(const std::string& url, int credit, const options& opt, bool async_claim) {
  {
    pg::connection conn{url};
    conn.exec_script(R"(
      DROP TABLE IF EXISTS bare_jobs;
      CREATE TABLE bare_jobs (
        id               BIGSERIAL PRIMARY KEY,
        state            TEXT NOT NULL DEFAULT 'ready',
        attempt          INTEGER NOT NULL DEFAULT 0,
        lease_owner      TEXT,
        lease_expires_at TIMESTAMPTZ,
        payload          JSONB NOT NULL DEFAULT '{}',
        created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
        finished_at      TIMESTAMPTZ);
      CREATE INDEX bare_jobs_ready_idx ON bare_jobs (id) WHERE state = 'ready';)");
    conn.exec("INSERT INTO bare_jobs (payload) SELECT '{}' FROM generate_series(1, $1::int)",
              {pg::to_param(opt.runs)});
    conn.exec("VACUUM ANALYZE bare_jobs");
  }
  queue_ops ops;
  ops.claim = [](pg::connection& c, const std::string& worker, int n) {
    auto res = c.exec_prepared(
      "UPDATE bare_jobs j SET state = 'running', lease_owner = $1, "
      "lease_expires_at = now() + interval '60 seconds', attempt = j.attempt + 1 "
      "FROM (SELECT id FROM bare_jobs WHERE state = 'ready' ORDER BY id LIMIT $2 "
      "FOR UPDATE SKIP LOCKED) p WHERE j.id = p.id RETURNING j.id, j.attempt, j.payload",
      {worker, pg::to_param(n)});
    std::vector<held> got(static_cast<size_t>(res.rows()));
    for (int i = 0; i < res.rows(); ++i)
      got[static_cast<size_t>(i)] = {res.i64(i, 0), static_cast<int>(res.i64(i, 1))};
    return got;
  };
  ops.record = [](pg::connection& c, const std::string& worker, const std::vector<held>& batch) {
    std::vector<int64_t> ids, attempts;
    for (auto& h : batch) {
      ids.push_back(h.run_id);
      attempts.push_back(h.attempt);
    }
    auto done = c.exec_prepared(
                   "UPDATE bare_jobs j SET state = 'done', finished_at = now(), "
                   "lease_owner = NULL, lease_expires_at = NULL "
                   "FROM unnest($1::bigint[], $2::int[]) AS o(id, attempt) "
                   "WHERE j.id = o.id AND j.attempt = o.attempt AND j.lease_owner = $3 "
                   "AND j.state = 'running'",
                   {pg::array_literal(ids), pg::array_literal(attempts), worker})
                  .affected();
    return static_cast<int>(static_cast<int64_t>(batch.size()) - done);
  };
  auto out = drive(url, credit, opt, ops, "baseline", [&](pg::connection& c) {
    if (async_claim)
      c.exec("SET synchronous_commit = off");
  });
  pg::connection conn{url};
  auto r = conn.exec("SELECT count(*) FILTER (WHERE state = 'done'), "
                     "count(*) FILTER (WHERE attempt <> 1) FROM bare_jobs");
  if (r.i64(0, 0) != opt.runs || r.i64(0, 1) != 0)
    bench::error("baseline: %lld of %d runs done, %lld claimed more than once",
                 static_cast<long long>(r.i64(0, 0)), opt.runs,
                 static_cast<long long>(r.i64(0, 1)));
  return out;
}

} // namespace spool::bench::queue
