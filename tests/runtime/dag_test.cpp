#include "runtime/config/dag.hpp"

#include <catch2/catch.hpp>

using spool::config::dag;
using names = std::vector<std::string>;

namespace {

/// The seed pipeline's shape, in file order.
dag video_pipeline() {
  return dag({
    {"asset_gen", {}},
    {"video_gen", {"asset_gen"}},
    {"narration", {"asset_gen"}},
    {"sfx", {"asset_gen"}},
    {"assembly", {"video_gen", "narration", "sfx"}},
  });
}

} // namespace

TEST_CASE("a topological order puts every stage after the ones it waits for",
          "[config][dag]") {
  CHECK(video_pipeline().topo_order()
        == names{"asset_gen", "video_gen", "narration", "sfx", "assembly"});
}

TEST_CASE("a topological order keeps file order among stages ready together",
          "[config][dag]") {
  // c is declared before b but waits for b; d and a wait for nothing.
  dag g({{"c", {"b"}}, {"d", {}}, {"b", {"a"}}, {"a", {}}});
  CHECK(g.topo_order() == names{"d", "a", "b", "c"});
}

TEST_CASE("an acyclic graph reports no cycle", "[config][dag]") {
  CHECK_FALSE(video_pipeline().find_cycle().has_value());
  CHECK_FALSE(dag().find_cycle().has_value());
}

TEST_CASE("a cycle is reported as the path that closes it", "[config][dag]") {
  dag g({{"root", {}}, {"a", {"root", "b"}}, {"b", {"c"}}, {"c", {"a"}}});
  auto cycle = g.find_cycle();
  REQUIRE(cycle.has_value());
  CHECK(*cycle == names{"a", "b", "c", "a"});
}

TEST_CASE("a stage that waits for itself is a cycle of one", "[config][dag]") {
  dag g({{"a", {}}, {"b", {"b"}}});
  auto cycle = g.find_cycle();
  REQUIRE(cycle.has_value());
  CHECK(*cycle == names{"b", "b"});
}

TEST_CASE("stages on or behind a cycle are left out of the order",
          "[config][dag]") {
  dag g({{"a", {}}, {"b", {"c"}}, {"c", {"b"}}, {"d", {"c"}}});
  CHECK(g.topo_order() == names{"a"});
}

TEST_CASE("upstream and downstream list direct neighbours only",
          "[config][dag]") {
  auto g = video_pipeline();
  CHECK(g.upstream("assembly") == names{"video_gen", "narration", "sfx"});
  CHECK(g.upstream("asset_gen").empty());
  CHECK(g.downstream("asset_gen") == names{"video_gen", "narration", "sfx"});
  CHECK(g.downstream("video_gen") == names{"assembly"});
  CHECK(g.downstream("assembly").empty());
  CHECK(g.upstream("nope").empty());
  CHECK(g.downstream("nope").empty());
}

TEST_CASE("downstream follows file order, not the order of after lists",
          "[config][dag]") {
  dag g({{"x", {}}, {"late", {"x"}}, {"early", {"x"}}});
  CHECK(g.downstream("x") == names{"late", "early"});
}

TEST_CASE("roots are the stages that wait for nothing", "[config][dag]") {
  dag g({{"a", {}}, {"b", {"a"}}, {"c", {}}});
  CHECK(g.roots() == names{"a", "c"});
  CHECK(video_pipeline().roots() == names{"asset_gen"});
}

TEST_CASE("unknown and repeated dependencies and repeated names are tolerated",
          "[config][dag]") {
  dag g({{"a", {}}, {"b", {"a", "a", "ghost"}}, {"a", {"b"}}});
  CHECK(g.size() == 2);
  CHECK(g.names() == names{"a", "b"});
  CHECK(g.contains("a"));
  CHECK_FALSE(g.contains("ghost"));
  CHECK(g.upstream("b") == names{"a"});
  CHECK(g.downstream("a") == names{"b"});
  CHECK_FALSE(g.find_cycle().has_value()); // the second "a" was dropped
  CHECK(g.topo_order() == names{"a", "b"});
}
