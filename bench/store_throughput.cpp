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
// In the same run it measures a raw baseline, the ceiling of this design on
// this database: a bare table (state, attempt, lease owner and expiry) and
// the same supervisors (connections, threads, window, flush size), where a
// claim is one statement and one transaction,
//
//   UPDATE bare_jobs SET state, lease_owner, lease_expires_at, attempt + 1
//     FROM (SELECT id ... ORDER BY id LIMIT <credit> FOR UPDATE SKIP LOCKED)
//
// at the same batch size as Spool's claim (the credit), committed the way
// spool_claim commits (asynchronously when it does; the line says which),
// and a flush marks its runs done in a second transaction, fenced by
// (owner, attempt) like Spool's. What Spool does beyond it is its own cost:
// fair order across channels, attempt rows, task states and dependencies.
// Each round runs the baseline and Spool back to back on one fresh database;
// the medians over rounds and the ratio Spool / baseline are printed (compare
// ratios measured in one run: this box is shared and absolute numbers drift).
// Besides runs/s, each line shows the server CPU a run costs (read from
// /proc for the run's own backends, so other load on the box does not count;
// 10 ms ticks), split into the claim and the record connections, the client's
// CPU, call counts and latencies, and the WAL written per run.
//
// Exits 1 when a run is not done at the end, is claimed twice, or an outcome
// is refused, in either the baseline or Spool.
//
//   ./dev.sh bench store_throughput [runs] [supervisors] [rounds]
//   defaults: 20000 runs, 2 supervisors (4 connections), 5 rounds

#include "bench/bench_support.hpp"
#include "runtime/pg/connection.hpp"
#include "runtime/store/store.hpp"
#include "runtime/store/providers.hpp"
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

// -- Spool ---------------------------------------------------------------------

/// `provider`: every claim goes through the admission of a provider whose
/// limits (cap, rate, quota, breaker) are never reached.
spool_result spool_rate(const std::string& url, int credit, const options& opt,
                        bool provider = false) {
  {
    pg::connection conn{url};
    store::store q{conn};
    if (provider)
      q.sync_providers(R"([{"name": "api", "max_concurrent": 100000,
        "rate": {"per_s": 100000, "burst": 100000}, "daily_quota": {"units": 1e12},
        "breaker": {"consecutive_failures": 1000}}])");
    for (int from = 0; from < opt.runs; from += 50'000) {
      std::vector<store::new_task> tasks(static_cast<size_t>(std::min(50'000, opt.runs - from)));
      for (size_t i = 0; i < tasks.size(); ++i)
        tasks[i].channel_id = "ch" + std::to_string((from + i) % 100);
      q.enqueue(tasks, {{"s", {}, false, 3}});
    }
    conn.exec("VACUUM ANALYZE");
  }
  queue_ops ops;
  ops.claim = [provider](pg::connection& c, const std::string& worker, int n) {
    store::store q{c};
    std::vector<held> got;
    auto runs = provider ? q.claim_limited("s", n, worker, 60s, "api").runs
                         : q.claim("s", n, worker, 60s);
    for (auto& r : runs)
      got.push_back({r.run_id, r.attempt, r.lease_token});
    return got;
  };
  ops.record = [](pg::connection& c, const std::string& worker, const std::vector<held>& batch) {
    store::store q{c};
    std::vector<store::outcome_record> outcomes;
    outcomes.reserve(batch.size());
    for (auto& h : batch) {
      store::outcome_record o;
      o.run_id = h.run_id;
      o.attempt = h.attempt;
      o.lease_token = h.lease_token;
      outcomes.push_back(std::move(o));
    }
    int refused = 0;
    for (auto& r : q.record(worker, outcomes))
      refused += r.accepted ? 0 : 1;
    return refused;
  };
  const char* profile = std::getenv("SPOOL_BENCH_PROFILE");
  if (profile != nullptr && *profile == '1') {
    pg::connection c{url};
    c.exec("SELECT pg_stat_reset()");
    c.exec("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET track_functions = ''all''', "
           "current_database()); END $$");
  }
  auto out = drive(url, credit, opt, ops, "spool");
  pg::connection conn{url};
  if (profile != nullptr && *profile == '1') {
    conn.exec("SELECT pg_stat_force_next_flush()");
    auto r = conn.exec("SELECT funcname, calls, round(self_time::numeric, 1), "
                       "round(total_time::numeric, 1) FROM pg_stat_user_functions "
                       "ORDER BY self_time DESC LIMIT 12");
    std::printf("    profile (%s): function, calls, self ms, total ms\n",
                provider ? "behind a provider" : "no provider");
    for (int i = 0; i < r.rows(); ++i)
      std::printf("      %-32s %8s %10s %10s\n", r.str(i, 0).c_str(), r.str(i, 1).c_str(),
                  r.str(i, 2).c_str(), r.str(i, 3).c_str());
  }
  auto completed = conn.exec("SELECT count(*) FROM tasks WHERE state = 'completed'").i64(0, 0);
  if (completed != opt.runs)
    bench::error("spool: %lld of %d tasks completed", static_cast<long long>(completed),
                 opt.runs);
  bench::check_all_done_once(conn, opt.runs, "spool");
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
  bool async_claim = false;
  {
    test::fresh_database db;
    async_claim = spool_claims_async(db.url());
  }
  std::printf("store_throughput: %d runs; %d supervisors (claim + record connection each), "
              "the same for the baseline; baseline claims (a batch of the credit, with a "
              "lease) commit %s, as spool_claim's do; %d rounds\n",
              opt.runs, opt.supervisors, async_claim ? "asynchronously" : "synchronously",
              opt.rounds);
  for (int credit : {10, 32}) {
    std::vector<double> bare, ours, ratios, bare_cpu, our_cpu, cpu_ratios, limited,
      limited_ratios;
    for (int round = 0; round < opt.rounds; ++round) {
      test::fresh_database db;
      auto b = bare_rate(db.url(), credit, opt, async_claim);
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
                  "%.0f us | baseline claims of %.0f us | machine busy %.0f%%, "
                  "WAL %.0f B/run\n",
                  credit, round + 1, b.rate, s.rate, s.rate / b.rate, s.server_us,
                  s.claim_cpu_us, s.record_cpu_us, b.server_us, s.client_us, s.claim_calls,
                  s.claim_us, s.record_calls, opt.runs / s.record_calls, s.record_us, b.claim_us,
                  s.cpu, s.wal_per_run);
      test::fresh_database db2;
      auto p = spool_rate(db2.url(), credit, opt, true);
      limited.push_back(p.rate);
      limited_ratios.push_back(p.rate / s.rate);
      std::printf("  credit %2d round %d: behind a provider never limiting %6.0f runs/s, %.2f "
                  "of without | server cpu/run %4.1f us (claim %4.1f + record %4.1f) | %.0f "
                  "claims of %.0f us, %.0f records of %.0f runs in %.0f us\n",
                  credit, round + 1, p.rate, p.rate / s.rate, p.server_us, p.claim_cpu_us,
                  p.record_cpu_us, p.claim_calls, p.claim_us, p.record_calls,
                  opt.runs / p.record_calls, p.record_us);
      std::fflush(stdout);
    }
    std::printf("credit %2d median: baseline %6.0f/s, spool %6.0f runs/s, ratio %.2f; "
                "server cpu/run %.1f us vs %.1f us (x%.1f)\n",
                credit, median(bare), median(ours), median(ratios), median(our_cpu),
                median(bare_cpu), median(cpu_ratios));
    std::printf("credit %2d median behind a provider: %6.0f runs/s, %.2f of without (goal >= "
                "0.8)\n",
                credit, median(limited), median(limited_ratios));
  }
  return bench::exit_status();
}
