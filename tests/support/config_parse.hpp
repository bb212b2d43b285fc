#pragma once
// Parsing configurations in tests: a file that must be valid or refused,
// and the seed pipeline's stage graph.

#include "runtime/config/config.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>
#include <string>
#include <string_view>

namespace spool::test {

/// Every problem of `r`, one per line.
inline std::string all_problems(const config::load_result& r) {
  std::string out;
  for (const auto& p : r.problems)
    out += config::to_string(p) + "\n";
  return out;
}

/// Whether `r` reports a problem at exactly `path` whose message contains
/// `text`.
inline bool has_problem(const config::load_result& r, std::string_view path,
                        std::string_view text) {
  return std::any_of(r.problems.begin(), r.problems.end(), [&](const auto& p) {
    return p.path == path && p.message.find(text) != std::string::npos;
  });
}

/// Checks that `result` reports a problem at `path` whose message contains
/// `text`; on failure, shows every problem.
#define CHECK_PROBLEM(result, path, text)                                      \
  do {                                                                         \
    INFO(::spool::test::all_problems(result));                                 \
    CHECK(::spool::test::has_problem(result, path, text));                     \
  } while (false)

/// Parses a file that must be valid.
inline std::shared_ptr<const config::snapshot> parse_ok(std::string_view text) {
  auto r = config::parse(text);
  INFO(all_problems(r));
  REQUIRE(r.ok());
  REQUIRE(r.problems.empty());
  return r.config;
}

/// Parses a file that must be refused.
inline config::load_result parse_bad(std::string_view text) {
  auto r = config::parse(text);
  REQUIRE_FALSE(r.ok());
  REQUIRE_FALSE(r.problems.empty());
  return r;
}

/// One line per change: "key: before -> after (effect)".
inline std::string render(const std::vector<config::change>& cs) {
  std::string out;
  for (const auto& c : cs)
    out += c.key + ": " + c.before + " -> " + c.after + " ("
           + std::string(config::to_string(c.effect)) + ")\n";
  return out;
}

/// The seed pipeline's stages with default settings.
constexpr const char* seed_pipeline = R"({
  "stages": [
    {"name": "asset_gen"},
    {"name": "video_gen", "after": ["asset_gen"]},
    {"name": "narration", "after": ["asset_gen"]},
    {"name": "sfx", "after": ["asset_gen"]},
    {"name": "assembly", "after": ["video_gen", "narration", "sfx"]}
  ]
})";

} // namespace spool::test
