// spool demo: the shipped pipeline end to end on the local database. It
// migrates, enqueues videos across channels with mixed priorities, runs a
// worker until everything finished, shows live progress, and summarizes.

#include "actors/worker.hpp"
#include "cli/commands.hpp"
#include "runtime/config/config.hpp"
#include "runtime/config/enqueue.hpp"
#include "runtime/migrations.hpp"
#include "runtime/pg/connection.hpp"
#include "runtime/store/store.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <pthread.h>
#include <set>
#include <thread>
#include <unistd.h>

namespace spool::cli {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

// -- what to make ----------------------------------------------------------------

const char* const topics[] = {
  "Why octopuses have three hearts",  "The quiet life of lighthouses",
  "How bees vote on a new home",      "Five tricks of desert plants",
  "The secret maths of sunflowers",   "What the tide owes the moon",
  "How glass is made from sand",      "The longest migration on Earth",
  "Why cats land on their feet",      "A short history of the teaspoon",
  "How fireflies light up",           "The mystery of singing sand dunes",
};

std::string demo_payload(int i) {
  std::string title = topics[static_cast<size_t>(i) % std::size(topics)];
  json::array scenes;
  const char* shots[] = {"an opening wide shot", "a close look at the detail",
                         "a calm closing image"};
  const char* lines[] = {"Here is something you may not know.", "Look closer and it gets stranger.",
                         "And that is the whole story."};
  for (int s = 0; s < 3; ++s)
    scenes.push_back(json::object{{"prompt", title + ": " + shots[s]}, {"narration", lines[s]}});
  // Three scenes of 2 s: 6 s of video, one variation (what the prices count).
  return json::serialize(json::object{{"title", title},
                                      {"scenes", scenes},
                                      {"images", 3},
                                      {"duration_s", 6},
                                      {"variations", 1}});
}

store::priority demo_priority(int i) {
  if (i % 6 == 0)
    return store::priority::high;
  if (i % 6 == 5)
    return store::priority::low;
  return store::priority::normal;
}

/// The same DAG with the simulate executor: scaled latencies and injected
/// transient and rate-limit failures, so retries and snoozes show.
std::shared_ptr<const config::snapshot> simulated(const config::snapshot& real) {
  auto copy = real;
  const std::map<std::string, double> p50_ms{
    {"asset_gen", 500}, {"video_gen", 1800}, {"narration", 300}, {"sfx", 300}, {"assembly", 700}};
  uint64_t seed = 11;
  for (auto& s : copy.stages) {
    auto& e = s.executor;
    e.kind = config::executor_kind::simulate;
    e.simulate.latency.dist = config::latency_dist::lognormal;
    auto p50 = p50_ms.count(s.name) ? p50_ms.at(s.name) : 500.0;
    e.simulate.latency.p50_ms = p50;
    e.simulate.latency.p99_ms = p50 * 3;
    e.simulate.errors = {};
    e.simulate.errors.transient = 0.08;
    e.simulate.errors.rate_limited = 0.05;
    e.simulate.errors.network = 0.02;
    e.simulate.retry_after_s = 1;
    e.simulate.cost = 0.01;
    e.simulate.seed = seed++;
    s.retry.base_s = 0.5;
    s.retry.factor = 2;
  }
  auto res = config::validate(copy);
  if (!res.ok())
    throw std::runtime_error("the simulated demo config is invalid: "
                             + config::to_string(res.problems.front()));
  return res.config;
}

// -- progress ------------------------------------------------------------------------

struct stage_counts {
  int64_t running = 0, done = 0, failed = 0, retrying = 0, waiting = 0;
};

struct snapshot_counts {
  std::map<std::string, stage_counts> stages;
  int64_t finished = 0, completed = 0, partial = 0, failed = 0, in_flight = 0;
};

snapshot_counts read_counts(pg::connection& conn, const std::string& ids) {
  snapshot_counts out;
  auto runs = conn.exec("SELECT stage, state::text, count(*) FROM stage_runs "
                        "WHERE task_id = ANY ($1::bigint[]) GROUP BY 1, 2",
                        {ids});
  for (int i = 0; i < runs.rows(); ++i) {
    auto& c = out.stages[runs.str(i, 0)];
    auto state = runs.text(i, 1);
    auto n = runs.i64(i, 2);
    if (state == "running")
      c.running += n;
    else if (state == "done")
      c.done += n;
    else if (state == "failed")
      c.failed += n;
    else if (state == "scheduled")
      c.retrying += n;
    else if (state == "ready" || state == "blocked")
      c.waiting += n;
  }
  auto tasks = conn.exec(
    "SELECT count(*) FILTER (WHERE state = 'completed'), "
    "count(*) FILTER (WHERE state = 'partially_completed'), "
    "count(*) FILTER (WHERE state IN ('failed', 'cancelled')), "
    "count(*) FILTER (WHERE state NOT IN ('completed', 'partially_completed', 'failed', "
    "  'cancelled') AND EXISTS (SELECT 1 FROM stage_runs r WHERE r.task_id = t.id "
    "  AND r.attempt > 0)) "
    "FROM tasks t WHERE id = ANY ($1::bigint[])",
    {ids});
  out.completed = tasks.i64(0, 0);
  out.partial = tasks.i64(0, 1);
  out.failed = tasks.i64(0, 2);
  out.in_flight = tasks.i64(0, 3);
  out.finished = out.completed + out.partial + out.failed;
  return out;
}

std::string bar(int64_t done, int64_t total, int width) {
  int filled = total > 0 ? static_cast<int>(done * width / total) : 0;
  return "[" + std::string(static_cast<size_t>(filled), '#')
         + std::string(static_cast<size_t>(width - filled), '.') + "]";
}

std::vector<std::string> render(const snapshot_counts& c, const config::snapshot& cfg,
                                int64_t total, double elapsed_s) {
  std::vector<std::string> lines;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-10s %9s %6s %7s %9s %8s", "stage", "running", "done",
                "failed", "retrying", "waiting");
  lines.emplace_back(buf);
  for (auto& s : cfg.stages) {
    auto it = c.stages.find(s.name);
    stage_counts sc = it == c.stages.end() ? stage_counts{} : it->second;
    std::snprintf(buf, sizeof buf, "%-10s %5lld/%-3d %6lld %7lld %9lld %8lld", s.name.c_str(),
                  static_cast<long long>(sc.running), s.max_concurrent,
                  static_cast<long long>(sc.done), static_cast<long long>(sc.failed),
                  static_cast<long long>(sc.retrying), static_cast<long long>(sc.waiting));
    lines.emplace_back(buf);
  }
  std::snprintf(buf, sizeof buf, "%s %lld/%lld videos, %lld in flight, %.1f s",
                bar(c.finished, total, 30).c_str(), static_cast<long long>(c.finished),
                static_cast<long long>(total), static_cast<long long>(c.in_flight), elapsed_s);
  lines.emplace_back(buf);
  return lines;
}

// -- summary ----------------------------------------------------------------------------

void print_summary(pg::connection& conn, const std::string& ids, const config::snapshot& cfg,
                   int64_t total) {
  std::printf("\nstage      attempts  retries   p50 s   p95 s\n");
  auto rows = conn.exec(
    "SELECT stage, count(*), count(*) FILTER (WHERE outcome IN ('retry', 'snoozed', 'lost')), "
    "coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - "
    "  started_at)) FILTER (WHERE outcome = 'ok'), 0)::float8, "
    "coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - "
    "  started_at)) FILTER (WHERE outcome = 'ok'), 0)::float8 "
    "FROM stage_attempts WHERE task_id = ANY ($1::bigint[]) GROUP BY stage",
    {ids});
  std::map<std::string, int> row_of;
  for (int i = 0; i < rows.rows(); ++i)
    row_of[rows.str(i, 0)] = i;
  for (auto& s : cfg.stages) {
    auto it = row_of.find(s.name);
    if (it == row_of.end())
      continue;
    int i = it->second;
    std::printf("%-10s %8lld %8lld %7.2f %7.2f\n", s.name.c_str(),
                static_cast<long long>(rows.i64(i, 1)), static_cast<long long>(rows.i64(i, 2)),
                rows.f64(i, 3), rows.f64(i, 4));
  }
  auto t = conn.exec(
    "SELECT count(*) FILTER (WHERE state = 'completed'), "
    "count(*) FILTER (WHERE state = 'partially_completed'), "
    "count(*) FILTER (WHERE state IN ('failed', 'cancelled')), "
    "coalesce(sum(actual_cost), 0)::float8, coalesce(sum(estimated_cost), 0)::float8 "
    "FROM tasks WHERE id = ANY ($1::bigint[])",
    {ids});
  auto span = conn.exec(
    "SELECT coalesce(extract(epoch FROM max(finished_at) - min(started_at)), 0)::float8 "
    "FROM stage_attempts WHERE task_id = ANY ($1::bigint[])",
    {ids});
  // Peak number of videos between their first start and their last finish.
  auto peak = conn.exec(
    "WITH spans AS (SELECT task_id, min(started_at) AS s, max(finished_at) AS f "
    "  FROM stage_attempts WHERE task_id = ANY ($1::bigint[]) GROUP BY task_id), "
    "e AS (SELECT s AS t, 1 AS d FROM spans UNION ALL SELECT f, -1 FROM spans WHERE f IS NOT NULL) "
    "SELECT coalesce(max(c), 0) FROM (SELECT sum(d) OVER (ORDER BY t, d ROWS UNBOUNDED "
    "PRECEDING) AS c FROM e) x",
    {ids});
  std::printf("\nvideos: %lld completed, %lld partially completed, %lld failed (of %lld)\n",
              static_cast<long long>(t.i64(0, 0)), static_cast<long long>(t.i64(0, 1)),
              static_cast<long long>(t.i64(0, 2)), static_cast<long long>(total));
  std::printf("makespan %.1f s, peak %lld videos in flight, cost $%.2f (estimated $%.2f at the "
              "configured prices)\n",
              span.f64(0, 0), static_cast<long long>(peak.i64(0, 0)), t.f64(0, 3), t.f64(0, 4));
  auto urls = conn.exec("SELECT video_url FROM tasks WHERE id = ANY ($1::bigint[]) AND "
                        "video_url IS NOT NULL ORDER BY id",
                        {ids});
  if (urls.rows() > 0) {
    auto first = fs::path{urls.str(0, 0)};
    std::printf("MP4s: %d files, e.g. %s\n", urls.rows(), first.string().c_str());
    std::printf("      (all under %s)\n",
                first.parent_path().parent_path().parent_path().string().c_str());
  }
}

/// Removes intermediate media (frames, clips, audio), keeping final MP4s.
void tidy(const std::string& data_dir, const std::vector<int64_t>& ids) {
  for (auto id : ids) {
    auto dir = fs::path{data_dir} / "tasks" / std::to_string(id);
    std::error_code ec;
    for (auto stage : {"asset_gen", "video_gen", "narration", "sfx"})
      fs::remove_all(dir / stage, ec);
  }
}

} // namespace

int demo(const global_options& g, const demo_options& o) {
  if (o.videos < 1 || o.videos > 10'000)
    throw std::invalid_argument("--videos: must be 1..10000");
  if (o.channels < 1 || o.channels > 1'000)
    throw std::invalid_argument("--channels: must be 1..1000");
  // The progress display is the demo's voice: routine worker logs would tear
  // it apart. Warnings still show; --log-level debug shows everything.
  if (spdlog::get_level() == spdlog::level::info)
    spdlog::set_level(spdlog::level::warn);
  auto real = load_config_source(g, o.config).config;
  auto cfg = o.simulate ? simulated(*real) : real;
  auto url = database_url(g, cfg.get());
  pg::connection conn{url};
  migrator{conn, builtin_migrations()}.up();

  std::vector<store::new_task> tasks;
  for (int i = 0; i < o.videos; ++i) {
    store::new_task t;
    t.channel_id = "channel-" + std::to_string(i % o.channels + 1);
    t.client_id = "demo-studio";
    t.campaign_id = "demo";
    t.prio = demo_priority(i);
    t.payload = demo_payload(i);
    tasks.push_back(std::move(t));
  }
  store::store q{conn};
  config::add_estimates(*cfg, tasks);
  auto created = q.enqueue(tasks, config::pipeline_of(*cfg));
  std::vector<int64_t> ids;
  for (auto& c : created)
    ids.push_back(c.task_id);
  auto ids_param = pg::array_literal(ids);
  auto data_dir = o.data_dir.empty() ? data_dir_for(*cfg) : fs::absolute(o.data_dir).string();
  fs::create_directories(data_dir);
  std::printf("spool demo: %d videos on %d channels, %s executor, media under %s\n", o.videos,
              o.channels, o.simulate ? "simulate" : "command (FFmpeg, espeak-ng, sox)",
              data_dir.c_str());
  std::error_code ec;
  auto self_path = fs::read_symlink("/proc/self/exe", ec);
  std::printf("watch from another terminal: %s status\n",
              ec ? "spool" : self_path.string().c_str());
  auto listen = http_listen_override("").value_or(cfg->http.listen);
  if (listen != "off" && !listen.ends_with(":0"))
    std::printf("metrics for Prometheus: http://%s/metrics (README, \"Monitoring\")\n",
                listen.c_str());

  // The worker's signal thread handles Ctrl-C (drain) and SIGHUP (ignored)
  // for the whole process.
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR1})
    sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  // The status page and client API beside the worker: watch the demo and
  // click its approvals in a browser.
  std::unique_ptr<api_server> page;
  if (o.page != "off") {
    try {
      page = std::make_unique<api_server>(url, cfg, o.page.empty() ? cfg->api.listen : o.page,
                                          data_dir);
      std::printf("status page: http://%s/ (%s)\n\n", page->address().c_str(),
                  o.review ? "approve or reject each video there, or with spool approve ID"
                           : "videos are approved as they reach the gate; --review to decide");
    } catch (const std::exception& e) {
      std::printf("no status page: %s\n\n", e.what());
    }
  } else {
    std::printf("\n");
  }
  std::atomic<bool> finished{false};
  int worker_code = 1;
  actors::worker_options wo;
  wo.database_url = url;
  wo.data_dir = data_dir;
  // The worker runs until every video finished (then the loop below asks
  // it to drain): with --exit-when-idle it would leave while videos wait
  // for an approval, having nothing it can do.
  wo.exit_when_idle = false;
  wo.http_listen = listen;
  std::thread worker{[&] {
    worker_code = actors::run_worker(cfg, wo);
    finished = true;
  }};

  bool tty = ::isatty(STDOUT_FILENO) != 0;
  auto start = std::chrono::steady_clock::now();
  size_t drawn = 0;
  auto last_plain = start - 10s;
  pg::connection watch{url};
  store::store reviews{watch};
  bool drain_asked = false;
  std::set<int64_t> announced; // tasks said to await a review (--review, no tty)
  while (true) {
    bool last = finished.load();
    auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    auto counts = read_counts(watch, ids_param);
    auto lines = render(counts, *cfg, o.videos, elapsed);
    // The approval gate: approved here at once, or by a person (--review).
    auto waiting = watch.exec("SELECT id FROM tasks WHERE id = ANY ($1::bigint[]) "
                              "AND state = 'awaiting_approval' ORDER BY id",
                              {ids_param});
    std::string awaiting;
    for (int i = 0; i < waiting.rows(); ++i) {
      auto id = waiting.i64(i, 0);
      if (!o.review) {
        reviews.approve(id, "demo", "approved by spool demo (run it with --review to decide)");
        continue;
      }
      awaiting += (awaiting.empty() ? "" : ", ") + std::to_string(id);
      if (!tty && announced.insert(id).second)
        std::printf("task %lld awaits approval: spool approve %lld (or spool reject %lld "
                    "--reason ...)\n",
                    static_cast<long long>(id), static_cast<long long>(id),
                    static_cast<long long>(id));
    }
    if (!awaiting.empty())
      lines.push_back("awaiting approval: tasks " + awaiting
                      + " (spool approve ID, or spool reject ID --reason ...)");
    if (counts.finished == o.videos && !drain_asked) {
      drain_asked = true;
      ::kill(::getpid(), SIGTERM); // the worker drains and returns
    }
    if (tty) {
      if (drawn > 0)
        std::printf("\x1b[%zuA", drawn);
      for (auto& l : lines)
        std::printf("\x1b[2K%s\n", l.c_str());
      for (size_t extra = lines.size(); extra < drawn; ++extra)
        std::printf("\x1b[2K\n"); // a line that went away
      drawn = std::max(drawn, lines.size());
    } else if (last || std::chrono::steady_clock::now() - last_plain >= 5s) {
      last_plain = std::chrono::steady_clock::now();
      std::printf("%s\n", lines.back().c_str());
    }
    std::fflush(stdout);
    if (last)
      break;
    std::this_thread::sleep_for(tty ? 250ms : 500ms);
  }
  worker.join();
  if (page)
    page->stop();
  print_summary(watch, ids_param, *cfg, o.videos);
  if (!o.keep && !o.simulate)
    tidy(data_dir, ids);
  if (worker_code != 0)
    return worker_code;
  return read_counts(watch, ids_param).finished == o.videos ? 0 : 1;
}

} // namespace spool::cli
