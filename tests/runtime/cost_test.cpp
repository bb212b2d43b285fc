// Price models in the config and the estimates they give: the seed's three
// examples with the shipped prices, how payload fields count, and the
// validation of prices and budgets.

#include "runtime/config/config.hpp"
#include "runtime/config/cost.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>

using namespace spool;
using namespace spool::config;

namespace {

std::shared_ptr<const snapshot> shipped() {
  auto r = load_file(SPOOL_SOURCE_DIR "/config/spool.json");
  REQUIRE(r.ok());
  return r.config;
}

std::shared_ptr<const snapshot> parse_ok(const std::string& text) {
  auto r = parse(text);
  INFO(to_string(r.problems));
  REQUIRE(r.ok());
  return r.config;
}

std::vector<std::string> problems_of(const std::string& text) {
  std::vector<std::string> out;
  for (auto& p : parse(text).problems)
    out.push_back(to_string(p));
  return out;
}

bool has(const std::vector<std::string>& ps, const std::string& text) {
  return std::any_of(ps.begin(), ps.end(),
                     [&](const std::string& p) { return p.find(text) != std::string::npos; });
}

double stage_usd(const cost::task_estimate& e, const std::string& stage) {
  for (auto& s : e.stages)
    if (s.stage == stage)
      return s.usd;
  FAIL("no stage " << stage);
  return 0;
}

} // namespace

// -- the seed's examples ---------------------------------------------------------

// Assumptions (README, "Cost and budgets"): a scene every 10 s of video and one
// image per scene and variation; narration and sound effects one call each.

TEST_CASE("a 30 s TikTok in one variation is estimated at about 3.00 USD", "[cost]") {
  auto e = cost::estimate_task(*shipped(), R"({"duration_s": 30, "variations": 1, "images": 3})");
  CHECK(stage_usd(e, "asset_gen") == Approx(0.009));  // 3 flux-schnell images
  CHECK(stage_usd(e, "video_gen") == Approx(3.00));   // 30 s of skyreels-2
  CHECK(stage_usd(e, "assembly") == 0);               // FFmpeg: free
  CHECK(e.usd == Approx(3.029));
  CHECK(e.usd == Approx(3.00).epsilon(0.02));
}

TEST_CASE("an HD Instagram Reel in three variations is estimated at about 9.50 USD",
          "[cost]") {
  auto e = cost::estimate_task(
    *shipped(), R"({"duration_s": 30, "variations": 3, "images": 3, "hd": true})");
  CHECK(stage_usd(e, "asset_gen") == Approx(0.495)); // 9 flux-pro images
  CHECK(stage_usd(e, "video_gen") == Approx(9.00));
  CHECK(e.usd == Approx(9.515));
  CHECK(e.usd == Approx(9.50).epsilon(0.02));
}

TEST_CASE("an upscaled 60 s YouTube Short is estimated at about 6.30 USD", "[cost]") {
  auto e = cost::estimate_task(
    *shipped(), R"({"duration_s": 60, "variations": 1, "images": 6, "upscale": true})");
  CHECK(stage_usd(e, "video_gen") == Approx(6.25)); // 60 s + one upscale
  CHECK(e.usd == Approx(6.288));
  CHECK(e.usd == Approx(6.30).epsilon(0.02));
  const auto& video = e.stages.at(1);
  REQUIRE(video.terms.size() == 2);
  CHECK(video.terms[1].term == "price.plus");
  CHECK(video.terms[1].model == "stable-video-upscale");
}

// -- how payload fields count -------------------------------------------------------

TEST_CASE("unit fields count numbers, array lengths and booleans; others count 1",
          "[cost]") {
  auto cfg = parse_ok(R"({"stages": [{"name": "a",
    "price": {"per_call": 0.5, "per_unit": 2, "units": ["n", "scenes", "flag", "missing"]}}]})");
  auto e = cost::estimate_task(*cfg, R"({"n": 3, "scenes": [1, 2], "flag": true})");
  REQUIRE(e.stages.size() == 1);
  CHECK(e.stages[0].terms.at(0).units == 6);
  CHECK(e.usd == Approx(0.5 + 2 * 6));
  CHECK(e.stages[0].assumed == std::vector<std::string>{"missing"});
  // A negative number counts 0, a string 1 (and is listed as assumed).
  auto neg = cost::estimate_task(*cfg, R"({"n": -4, "scenes": "x"})");
  CHECK(neg.usd == Approx(0.5));
  CHECK(neg.stages[0].assumed.size() == 3);
}

TEST_CASE("a price with when costs only when the field is set", "[cost]") {
  auto cfg = parse_ok(R"({"stages": [{"name": "upload",
    "price": {"per_call": 1, "when": "publish"}}, {"name": "free"}]})");
  CHECK(cost::estimate_task(*cfg, R"({})").usd == 0);
  CHECK(cost::estimate_task(*cfg, R"({"publish": false})").usd == 0);
  CHECK(cost::estimate_task(*cfg, R"({"publish": ""})").usd == 0);
  CHECK(cost::estimate_task(*cfg, R"({"publish": "yes"})").usd == 1);
  CHECK(cost::estimate_task(*cfg, R"({"publish": 2})").usd == 1);
  CHECK(cost::estimate_task(*cfg, R"({"publish": true})").stages.at(1).terms.empty());
}

TEST_CASE("an absurd payload gives the largest estimate, never an overflow", "[cost]") {
  auto cfg = parse_ok(R"({"stages": [{"name": "a",
    "price": {"per_unit": 10000, "units": ["n", "m"]}}, {"name": "b", "after": ["a"],
    "price": {"per_unit": 10000, "units": ["n"]}}]})");
  auto e = cost::estimate_task(*cfg, R"({"n": 1e300, "m": 1e300})");
  CHECK(e.stages[0].usd == cost::max_estimate);
  CHECK(e.usd == cost::max_estimate);
}

TEST_CASE("a payload that is not a JSON object is refused by name", "[cost]") {
  auto cfg = shipped();
  CHECK_THROWS_WITH(cost::estimate_task(*cfg, "[1]"), Catch::Contains("payload"));
  CHECK_THROWS_WITH(cost::estimate_task(*cfg, "{"), Catch::Contains("payload: not valid JSON"));
}

// -- validation -----------------------------------------------------------------------

TEST_CASE("bad prices and budgets are refused naming the field", "[cost][config]") {
  auto ps = problems_of(R"({"stages": [{"name": "a", "price": {"per_unit": -1,
    "units": ["ok", "", "9x"], "instead": {"per_unit": 1}, "plus": {"when": "up", "bogus": 1}}}],
    "budgets": {"hard_usd": -5, "time_zone": "", "client_hard_usd": {"acme": "x", "b": -1},
                "overrun_factor": 0.5}})");
  CHECK(has(ps, "stages[0].price.per_unit: must be >= 0, got -1"));
  CHECK(has(ps, "stages[0].price.units: element 1 must name a payload field"));
  CHECK(has(ps, "stages[0].price.instead.when: missing required key"));
  CHECK(has(ps, "stages[0].price.plus.bogus: unknown key"));
  CHECK(has(ps, "budgets.hard_usd: must be >= 0, got -5"));
  CHECK(has(ps, "budgets.time_zone: must not be empty"));
  CHECK(has(ps, "budgets.client_hard_usd.acme: must be a number"));
  CHECK(has(ps, "budgets.client_hard_usd.b: must be >= 0, got -1"));
  CHECK(has(ps, "budgets.overrun_factor: must be >= 1, got 0.5"));
  CHECK(has(problems_of(R"({"stages": [{"name": "a", "price": {"units": ["9x"]}}]})"),
            "stages[0].price.units: element 0 must be empty or match"));
}

TEST_CASE("prices and budgets round-trip through the canonical JSON", "[cost][config]") {
  auto cfg = shipped();
  const auto* video = cfg->stage("video_gen");
  REQUIRE(video != nullptr);
  CHECK(video->has_price);
  CHECK(video->has_price_plus);
  CHECK_FALSE(video->has_price_instead);
  CHECK(video->price.units == std::vector<std::string>{"duration_s", "variations"});
  CHECK(cfg->budgets.hard_usd == 150);
  CHECK(cfg->budgets.soft_usd == 100);
  CHECK(cfg->budgets.time_zone == "America/Los_Angeles");
  auto again = parse(canonical_json(*cfg));
  REQUIRE(again.ok());
  CHECK(*again.config == *cfg);
  CHECK_FALSE(cfg->stage("assembly")->has_price);
  CHECK(canonical_json(*cfg).find("\"assembly\",\"after\"") != std::string::npos);
}

TEST_CASE("a change of a price or a budget is live", "[cost][config]") {
  auto before = parse_ok(R"({"stages": [{"name": "a", "price": {"per_call": 1}}],
                             "budgets": {"hard_usd": 10, "client_hard_usd": {"acme": 2}}})");
  auto after = parse_ok(R"({"stages": [{"name": "a", "price": {"per_call": 2}}],
                            "budgets": {"hard_usd": 20, "client_hard_usd": {"acme": 3}}})");
  auto changes = diff(*before, *after);
  REQUIRE(changes.size() == 3);
  for (auto& c : changes) {
    INFO(c.key);
    CHECK(c.effect == change_effect::live);
  }
  CHECK(changes[0].key == "budgets.hard_usd");
  CHECK(changes[1].key == "budgets.client_hard_usd");
  CHECK(changes[2].key == "stages[a].price.per_call");
  CHECK(restart_required(*before, *after).empty());
}
