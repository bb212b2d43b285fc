// diff, change effects, restart_required and keep_restart_only
// (runtime/config/config.hpp).

#include "runtime/config/config.hpp"

#include <algorithm>
#include <set>
#include <string>

#include "tests/support/config_parse.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

using namespace spool::config;
using spool::test::all_problems;
using spool::test::parse_bad;
using spool::test::parse_ok;
using spool::test::render;
using spool::test::seed_pipeline;
using names = std::vector<std::string>;

namespace {

stage_config& stage_of(snapshot& s, std::string_view name) {
  auto it = std::find_if(s.stages.begin(), s.stages.end(),
                         [&](const auto& st) { return st.name == name; });
  REQUIRE(it != s.stages.end());
  return *it;
}

names keys_of(const std::vector<change>& cs) {
  names out;
  for (const auto& c : cs)
    out.push_back(c.key);
  return out;
}

/// {"a": {"b": v}} for the dotted key "a.b".
boost::json::object nest(std::string_view dotted, boost::json::value v) {
  auto dot = dotted.find('.');
  boost::json::object obj;
  if (dot == std::string_view::npos)
    obj[dotted] = std::move(v);
  else
    obj[dotted.substr(0, dot)] = nest(dotted.substr(dot + 1), std::move(v));
  return obj;
}

/// Copies the keys of `from` into `into`, merging nested objects.
void merge(boost::json::object& into, const boost::json::object& from) {
  for (const auto& kv : from) {
    auto* mine = into.if_contains(kv.key());
    if (mine != nullptr && mine->is_object() && kv.value().is_object())
      merge(mine->as_object(), kv.value().as_object());
    else
      into[kv.key()] = kv.value();
  }
}

/// A file with one stage "a" that calls provider "p" and falls back to
/// provider "q" with an executor of its own, provider "p" with every
/// optional limit, and `key` (a describe() name) set to `v`.
std::string file_with(const std::string& key, const boost::json::value& v) {
  auto stage = boost::json::parse(R"({"name": "a", "provider": "p",
    "fallback": {"provider": "q", "executor": {}},
    "price": {"instead": {"when": "hd"}, "plus": {"when": "up"}}})").as_object();
  auto provider = boost::json::parse(R"({"name": "p",
    "rate": {"per_s": 1}, "daily_quota": {"units": 10},
    "breaker": {}})").as_object();
  boost::json::object root;
  const std::string stage_prefix = "stages[].";
  const std::string provider_prefix = "providers[].";
  if (key.rfind(stage_prefix, 0) == 0)
    merge(stage, nest(key.substr(stage_prefix.size()), v));
  else if (key.rfind(provider_prefix, 0) == 0)
    merge(provider, nest(key.substr(provider_prefix.size()), v));
  else
    root = nest(key, v);
  root["providers"] = boost::json::array{provider, {{"name", "q"}}};
  root["stages"] = boost::json::array{stage};
  return boost::json::serialize(root);
}

} // namespace

// -- diff ---------------------------------------------------------------------

TEST_CASE("equal configurations have no changes", "[config][diff]") {
  auto a = parse_ok(seed_pipeline);
  CHECK(diff(*a, *a).empty());
  // Written differently, same meaning: explicit defaults, other key order.
  auto b = parse_ok(R"({"worker": {"lease_s": 30}, "stages": [
    {"max_concurrent": 1, "name": "asset_gen"},
    {"after": ["asset_gen"], "name": "video_gen",
     "executor": {"kind": "simulate", "latency": {"ms": 200}}},
    {"name": "narration", "after": ["asset_gen"], "retry": {"factor": 3.0}},
    {"name": "sfx", "after": ["asset_gen"]},
    {"name": "assembly", "after": ["video_gen", "narration", "sfx"]}]})");
  INFO(render(diff(*a, *b)));
  CHECK(diff(*a, *b).empty());
  CHECK(restart_required(*a, *b).empty());
}

TEST_CASE("a change of stage order alone is no change", "[config][diff]") {
  auto a = parse_ok(seed_pipeline);
  auto b = *a;
  std::reverse(b.stages.begin(), b.stages.end());
  INFO(render(diff(*a, b)));
  CHECK(diff(*a, b).empty());
}

TEST_CASE("a worker change is keyed by its dotted path and applies live",
          "[config][diff]") {
  auto a = parse_ok(seed_pipeline);
  auto b = *a;
  b.worker.lease_s = 60;
  b.worker.claim_batch_limit = 7;
  b.worker.heartbeat_interval_s = 2.5;
  auto cs = diff(*a, b);
  INFO(render(cs));
  CHECK(cs
        == std::vector<change>{
          {"worker.heartbeat_interval_s", "5", "2.5", change_effect::live},
          {"worker.lease_s", "30", "60", change_effect::live},
          {"worker.claim_batch_limit", "100", "7", change_effect::live}});
  CHECK(restart_required(*a, b).empty());
}

TEST_CASE("a stage change is keyed by the stage's name, not its index",
          "[config][diff]") {
  auto a = parse_ok(seed_pipeline);
  auto b = *a;
  stage_of(b, "video_gen").retry.factor = 2.5;
  stage_of(b, "video_gen").executor.simulate.latency.ms = 1500;
  stage_of(b, "sfx").max_concurrent = 4;
  stage_of(b, "sfx").executor.simulate.errors.transient = 0.1;
  auto cs = diff(*a, b);
  INFO(render(cs));
  CHECK(cs
        == std::vector<change>{
          {"stages[video_gen].retry.factor", "3", "2.5", change_effect::live},
          {"stages[video_gen].executor.latency.ms", "200", "1500",
           change_effect::live},
          {"stages[sfx].max_concurrent", "1", "4", change_effect::live},
          {"stages[sfx].executor.errors.transient", "0", "0.1",
           change_effect::live}});
}

TEST_CASE("a change of a restart-only property has effect restart",
          "[config][diff]") {
  auto a = parse_ok(seed_pipeline);
  auto b = *a;
  b.database_url = "postgresql://db/spool";
  b.worker.db_statement_timeout_s = 5;
  b.worker.db_call_timeout_s = 90; // live: a client-side deadline
  auto cs = diff(*a, b);
  INFO(render(cs));
  CHECK(cs
        == std::vector<change>{
          {"database_url", R"("")", R"("postgresql://db/spool")",
           change_effect::restart},
          {"worker.db_statement_timeout_s", "30", "5", change_effect::restart},
          {"worker.db_call_timeout_s", "60", "90", change_effect::live}});
  CHECK(restart_required(*a, b)
        == names{"database_url", "worker.db_statement_timeout_s"});
}

TEST_CASE("what the enqueue copies into each task has effect new tasks",
          "[config][diff]") {
  auto a = parse_ok(seed_pipeline);
  auto b = *a;
  stage_of(b, "sfx").after = {"asset_gen", "narration"};
  stage_of(b, "sfx").optional = true;
  stage_of(b, "sfx").retry.max_retries = 0;
  stage_of(b, "sfx").retry.max_lost_leases = 9;
  stage_of(b, "sfx").retry.base_s = 1; // live: read when a failure is recorded
  auto cs = diff(*a, b);
  INFO(render(cs));
  CHECK(cs
        == std::vector<change>{
          {"stages[sfx].after", R"(["asset_gen"])",
           R"(["asset_gen","narration"])", change_effect::new_tasks},
          {"stages[sfx].optional", "false", "true", change_effect::new_tasks},
          {"stages[sfx].retry.max_retries", "3", "0",
           change_effect::new_tasks},
          {"stages[sfx].retry.base_s", "5", "1", change_effect::live},
          {"stages[sfx].retry.max_lost_leases", "5", "9",
           change_effect::new_tasks}});
  CHECK(restart_required(*a, b).empty());
}

TEST_CASE("a stage added or removed is one change with its canonical JSON",
          "[config][diff]") {
  auto a = parse_ok(seed_pipeline);
  auto b = parse_ok(R"({"stages": [
    {"name": "asset_gen"},
    {"name": "captions", "after": ["asset_gen"], "max_concurrent": 2},
    {"name": "video_gen", "after": ["asset_gen"]},
    {"name": "narration", "after": ["asset_gen"]},
    {"name": "assembly", "after": ["video_gen", "narration", "captions"]}]})");
  auto cs = diff(*a, *b);
  INFO(render(cs));
  REQUIRE(cs.size() == 3);
  // In next's order, then the removed ones.
  CHECK(keys_of(cs)
        == names{"stages[captions]", "stages[assembly].after",
                 "stages[sfx]"});

  const auto& added = cs[0];
  CHECK(added.before == "(none)");
  CHECK(added.effect == change_effect::new_tasks);
  // The stage's part of the canonical JSON, as it would appear there.
  CHECK(canonical_json(*b).find(added.after) != std::string::npos);
  auto added_json = boost::json::parse(added.after);
  CHECK(added_json.at("name").as_string() == "captions");
  CHECK(added_json.at("max_concurrent").as_int64() == 2);

  CHECK(cs[1].before == R"(["video_gen","narration","sfx"])");
  CHECK(cs[1].after == R"(["video_gen","narration","captions"])");

  const auto& removed = cs[2];
  CHECK(removed.after == "(none)");
  CHECK(removed.effect == change_effect::new_tasks);
  CHECK(canonical_json(*a).find(removed.before) != std::string::npos);
  CHECK(boost::json::parse(removed.before).at("name").as_string() == "sfx");
}

TEST_CASE("keys of an executor kind selected on neither side make no noise",
          "[config][diff]") {
  auto a = parse_ok(seed_pipeline);
  auto b = *a;
  // Built in code: values left in the command variant of a simulate stage.
  stage_of(b, "sfx").executor.command.argv = {"bin/sfx"};
  stage_of(b, "sfx").executor.command.kill_grace_s = 1;
  // And in latency fields of a dist not selected.
  stage_of(b, "sfx").executor.simulate.latency.p99_ms = 5;
  INFO(render(diff(*a, b)));
  CHECK(diff(*a, b).empty());
  CHECK(canonical_json(*a) == canonical_json(b));
}

TEST_CASE("a change of executor kind lists the kind and the keys that differ",
          "[config][diff]") {
  auto a = parse_ok(R"({"stages": [{"name": "tts",
    "executor": {"latency": {"ms": 500}, "cost": 0.5}}]})");
  auto b = parse_ok(R"({"stages": [{"name": "tts",
    "executor": {"kind": "command", "argv": ["bin/tts"],
                 "kill_grace_s": 2}}]})");
  auto cs = diff(*a, *b);
  INFO(render(cs));
  // Simulate keys at their defaults (errors, seed, ...) are not listed; the
  // side where a key does not apply shows (none).
  CHECK(cs
        == std::vector<change>{
          {"stages[tts].executor.kind", R"("simulate")", R"("command")",
           change_effect::live},
          {"stages[tts].executor.latency.ms", "500", "(none)",
           change_effect::live},
          {"stages[tts].executor.cost", "0.5", "(none)", change_effect::live},
          {"stages[tts].executor.argv", "(none)", R"(["bin/tts"])",
           change_effect::live},
          {"stages[tts].executor.kill_grace_s", "(none)", "2",
           change_effect::live}});
}

TEST_CASE("a change of latency dist lists the fields of either shape that "
          "differ",
          "[config][diff]") {
  auto a = parse_ok(R"({"stages": [{"name": "s"}]})");
  auto b = parse_ok(R"({"stages": [{"name": "s",
    "executor": {"latency": {"dist": "uniform", "min_ms": 50}}}]})");
  auto cs = diff(*a, *b);
  INFO(render(cs));
  CHECK(cs
        == std::vector<change>{
          {"stages[s].executor.latency.dist", R"("fixed")", R"("uniform")",
           change_effect::live},
          {"stages[s].executor.latency.min_ms", "(none)", "50",
           change_effect::live}});
}

TEST_CASE("every leaf property changed alone gives one change with its key "
          "and registry effect",
          "[config][diff]") {
  auto base = parse_ok(file_with("stages[].max_concurrent", 1));
  std::size_t tested = 0;
  for (const auto& p : describe()) {
    if (p.type != property_type::integer && p.type != property_type::number
        && p.type != property_type::boolean)
      continue;
    if (p.required) // no default to change from (rate.per_s, ...)
      continue;
    INFO(p.name);
    auto def = boost::json::parse(p.default_text);
    // The first of a few other values that the validator accepts.
    std::vector<boost::json::value> candidates;
    if (def.is_bool()) {
      candidates.push_back(!def.get_bool());
    } else {
      auto d = def.is_double() ? def.get_double() : def.to_number<double>();
      for (double x : {d + 1, d / 2, d - 1, 0.5})
        if (x != d)
          candidates.push_back(p.type == property_type::integer
                                 ? boost::json::value(static_cast<int64_t>(x))
                                 : boost::json::value(x));
    }
    std::shared_ptr<const snapshot> next;
    for (const auto& v : candidates) {
      if (v == def)
        continue;
      auto r = parse(file_with(p.name, v));
      if (r.ok()) {
        next = r.config;
        break;
      }
    }
    if (!next) // only valid under another condition (e.g. uniform min_ms)
      continue;
    ++tested;
    auto cs = diff(*base, *next);
    INFO(render(cs));
    REQUIRE(cs.size() == 1);
    auto key = p.name;
    if (key.rfind("stages[].", 0) == 0)
      key = "stages[a]." + key.substr(9);
    if (key.rfind("providers[].", 0) == 0)
      key = "providers[p]." + key.substr(12);
    CHECK(cs[0].key == key);
    CHECK(cs[0].before == p.default_text);
    CHECK(cs[0].effect == p.effect);
    CHECK(restart_required(*base, *next)
          == (p.effect == change_effect::restart ? names{key} : names{}));
  }
  // Everything numeric or boolean except the latency fields of the uniform
  // and lognormal shapes (of executor and fallback.executor) and the
  // required numbers (rate.per_s, daily_quota.units).
  INFO("tested " << tested);
  CHECK(tested >= 61);
}

// -- keep_restart_only --------------------------------------------------------

TEST_CASE("keep_restart_only keeps the restart-only settings and applies the "
          "rest",
          "[config][diff]") {
  auto old = parse_ok(seed_pipeline);
  auto next = *old;
  next.data_dir = "/srv/spool";
  next.database_url = "postgresql://db/spool";
  next.worker.db_statement_timeout_s = 40;
  next.worker.db_lock_timeout_s = 1;
  next.worker.db_connect_timeout_s = 3;
  next.worker.db_keepalives_idle_s = 20;
  next.worker.db_keepalives_interval_s = 2;
  next.worker.db_keepalives_count = 9;
  next.worker.db_tcp_user_timeout_s = 11;
  next.worker.db_call_timeout_s = 120;
  next.worker.lease_s = 45;
  stage_of(next, "video_gen").max_concurrent = 3;
  stage_of(next, "video_gen").retry.max_retries = 1;
  next.stages.emplace_back().name = "captions";
  next.version = "next-version";

  auto kept = keep_restart_only(*old, next);
  CHECK(kept.version == "next-version");
  CHECK(kept.data_dir == old->data_dir);
  CHECK(kept.database_url == old->database_url);
  CHECK(kept.worker.db_statement_timeout_s == 30);
  CHECK(kept.worker.db_lock_timeout_s == 10);
  CHECK(kept.worker.db_connect_timeout_s == 10);
  CHECK(kept.worker.db_keepalives_idle_s == 10);
  CHECK(kept.worker.db_keepalives_interval_s == 5);
  CHECK(kept.worker.db_keepalives_count == 3);
  CHECK(kept.worker.db_tcp_user_timeout_s == 30);
  // Live and new-tasks properties and new stages come from next.
  CHECK(kept.worker.db_call_timeout_s == 120);
  CHECK(kept.worker.lease_s == 45);
  CHECK(kept.stage("video_gen")->max_concurrent == 3);
  CHECK(kept.stage("video_gen")->retry.max_retries == 1);
  CHECK(kept.stage("captions") != nullptr);

  CHECK(restart_required(*old, kept).empty());
  for (const auto& c : diff(*old, kept))
    CHECK(c.effect != change_effect::restart);
  // Nothing but the restart-only properties was taken from old.
  CHECK(restart_required(kept, next).size() == 9);
  for (const auto& c : diff(kept, next))
    CHECK(c.effect == change_effect::restart);
}

TEST_CASE("keep_restart_only of equal snapshots is the snapshot",
          "[config][diff]") {
  auto s = parse_ok(seed_pipeline);
  auto kept = keep_restart_only(*s, *s);
  CHECK(kept == *s);
  CHECK(kept.version == s->version);
}

// -- effects in the registry --------------------------------------------------

TEST_CASE("every property's effect agrees with needs_restart",
          "[config][diff]") {
  std::set<std::string_view> texts;
  for (const auto& p : describe()) {
    INFO(p.name);
    CHECK(p.needs_restart == (p.effect == change_effect::restart));
    texts.insert(to_string(p.effect));
  }
  CHECK(texts == std::set<std::string_view>{"live", "restart", "new tasks"});
  CHECK(to_string(change_effect::live) == "live");
  CHECK(to_string(change_effect::restart) == "restart");
  CHECK(to_string(change_effect::new_tasks) == "new tasks");
}

TEST_CASE("the properties fixed at enqueue are those the enqueue copies into "
          "each task",
          "[config][diff]") {
  // spool_enqueue (migrations/R_enqueue.sql) takes one pipeline_stage per
  // stage (cli pipeline_of): name, after, optional, max_retries, max_lost.
  names fixed;
  for (const auto& p : describe())
    if (p.effect == change_effect::new_tasks)
      fixed.push_back(p.name);
  CHECK(fixed
        == names{"stages", "stages[].name", "stages[].after",
                 "stages[].optional", "stages[].approval", "stages[].retry.max_retries",
                 "stages[].retry.max_lost_leases"});
}
