#include "runtime/exec/outcome_check.hpp"

#include <cmath>
#include <limits>
#include <string>

#include <catch2/catch.hpp>

using spool::outcome;
using spool::outcome_kind;
using spool::exec::check_outcome;
using spool::exec::limits_of;
using spool::exec::outcome_limits;

namespace {

outcome ok_with(std::string output, double cost = 0) {
  outcome o;
  o.kind = outcome_kind::ok;
  o.output = std::move(output);
  o.cost = cost;
  return o;
}

outcome error_of(outcome_kind kind, std::string message, double cost = 0) {
  outcome o;
  o.kind = kind;
  o.message = std::move(message);
  o.cost = cost;
  return o;
}

/// Checks `o` against the default limits and requires a rejection whose
/// message contains `text`.
outcome rejected(outcome o, std::string_view text,
                 const outcome_limits& lim = {}) {
  auto r = check_outcome(std::move(o), lim);
  INFO(r.message);
  REQUIRE(r.kind == outcome_kind::permanent);
  CHECK(r.message.find(text) != std::string::npos);
  CHECK(r.output == "{}");
  CHECK(r.cost == 0);
  CHECK(r.retry_after_s == 0);
  return r;
}

/// Checks an ok outcome with `output` and requires it to pass unchanged.
void passes(const std::string& output, const outcome_limits& lim = {}) {
  auto r = check_outcome(ok_with(output, 1.25), lim);
  INFO(r.message);
  CHECK(r.kind == outcome_kind::ok);
  CHECK(r.output == output);
  CHECK(r.cost == 1.25);
  CHECK(r.message.empty());
}

std::string nested_arrays(int depth) {
  return "{\"a\":" + std::string(depth, '[') + std::string(depth, ']') + "}";
}

bool is_valid_utf8(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    if ((c >= 0x80 && c < 0xC2) || i + n > s.size())
      return false;
    for (std::size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80)
        return false;
    i += n;
  }
  return true;
}

} // namespace

// -- valid outcomes -----------------------------------------------------------

TEST_CASE("a valid ok outcome passes unchanged", "[outcome_check]") {
  passes("{}");
  passes(R"({"video_url":"/data/1.mp4","frames":[1,2,3],"meta":{"x":null}})");
  passes(R"({"caption":"caf\u00e9 \ud83d\ude00 \u00e9t\u00e9","n":-0.5})");
  passes("{\"caption\":\"caf\xC3\xA9 \xF0\x9F\x98\x80\"}");
  passes(R"({"big":1e308,"small":4.9e-324,"neg":-1.7976931348623157e308})");
  passes(R"({"zero":0,"zeros":0.000e-999,"int":18446744073709551615})");
  passes("  {\"spaced\": true}\n");
}

TEST_CASE("a valid error outcome passes unchanged", "[outcome_check]") {
  auto o = error_of(outcome_kind::rate_limited, "429 from the provider", 0.5);
  o.retry_after_s = 30;
  auto r = check_outcome(o, {});
  CHECK(r.kind == outcome_kind::rate_limited);
  CHECK(r.message == "429 from the provider");
  CHECK(r.cost == 0.5);
  CHECK(r.retry_after_s == 30);
}

TEST_CASE("the output of an error outcome is not checked", "[outcome_check]") {
  auto o = error_of(outcome_kind::transient, "try later");
  o.output = "not json";
  auto r = check_outcome(o, {});
  CHECK(r.kind == outcome_kind::transient);
  CHECK(r.output == "not json");
}

// -- cost ---------------------------------------------------------------------

TEST_CASE("a cost above max_cost fails the run and is recorded as 0",
          "[outcome_check]") {
  auto r = rejected(ok_with("{}", 1e9),
                    "result: \"cost\" 1000000000 exceeds max_cost 10000");
  CHECK(r.message == "result: \"cost\" 1000000000 exceeds max_cost 10000");
}

TEST_CASE("a cost at max_cost passes, just above it does not",
          "[outcome_check]") {
  outcome_limits lim;
  lim.max_cost = 2.5;
  CHECK(check_outcome(ok_with("{}", 2.5), lim).kind == outcome_kind::ok);
  CHECK(check_outcome(ok_with("{}", 0), lim).kind == outcome_kind::ok);
  rejected(ok_with("{}", std::nextafter(2.5, 3.0)), "exceeds max_cost 2.5",
           lim);
}

TEST_CASE("a negative, NaN or infinite cost fails the run", "[outcome_check]") {
  rejected(ok_with("{}", -0.01), "result: \"cost\" -0.01 is negative");
  rejected(ok_with("{}", std::numeric_limits<double>::quiet_NaN()),
           "result: \"cost\" nan is not a finite number");
  rejected(ok_with("{}", std::numeric_limits<double>::infinity()),
           "result: \"cost\" inf is not a finite number");
  rejected(ok_with("{}", 1e308), "result: \"cost\" 1e+308 exceeds max_cost");
}

TEST_CASE("a max_cost beyond the store's column is lowered to the column",
          "[outcome_check]") {
  outcome_limits lim;
  lim.max_cost = 1e12;
  CHECK(check_outcome(ok_with("{}", 99999999.99), lim).kind
        == outcome_kind::ok);
  rejected(ok_with("{}", 1e8), "exceeds 99999999.999999, the most the store",
           lim);
}

TEST_CASE("a bad cost on an error outcome fails it and keeps its message",
          "[outcome_check]") {
  auto o = error_of(outcome_kind::rate_limited, "slow down", -3);
  o.retry_after_s = 10;
  auto r = rejected(o, "result: \"cost\" -3 is negative");
  CHECK(r.message
        == "result: \"cost\" -3 is negative; reported rate_limited: slow "
           "down");
}

TEST_CASE("a cancelled outcome stays cancelled; a bad cost becomes 0",
          "[outcome_check]") {
  auto r = check_outcome(error_of(outcome_kind::cancelled, "draining", 1e12),
                         {});
  CHECK(r.kind == outcome_kind::cancelled);
  CHECK(r.cost == 0);
  CHECK(r.message
        == "draining; result: \"cost\" 1000000000000 exceeds max_cost 10000 "
           "(recorded as 0)");
}

// -- output size and syntax ---------------------------------------------------

TEST_CASE("an output over max_output_bytes fails the run", "[outcome_check]") {
  std::string big = "{\"x\":\"" + std::string(5 * 1024 * 1024 - 8, 'a')
                    + "\"}";
  REQUIRE(big.size() == 5242880);
  auto r = rejected(ok_with(big, 3),
                    "result: \"output\" is 5242880 bytes, over "
                    "max_output_bytes 1048576");
  CHECK(r.message.size() < 200);
}

TEST_CASE("an output of exactly max_output_bytes passes", "[outcome_check]") {
  outcome_limits lim;
  lim.max_output_bytes = 12;
  passes(R"({"a":"1234"})", lim); // 12 bytes
  rejected(ok_with(R"({"a":"12345"})"),
           "is 13 bytes, over max_output_bytes 12", lim);
}

TEST_CASE("an output that is not one JSON object fails the run",
          "[outcome_check]") {
  rejected(ok_with("[1,2]"), "result: \"output\" must be a JSON object, got "
                             "an array");
  rejected(ok_with("\"text\""), "must be a JSON object, got a string");
  rejected(ok_with("42"), "must be a JSON object, got a number");
  rejected(ok_with("null"), "must be a JSON object, got null");
  rejected(ok_with("{\"a\":1"), "result: \"output\" is not valid JSON");
  rejected(ok_with(""), "is not valid JSON");
  rejected(ok_with("{} {}"), "is not valid JSON");
  rejected(ok_with("{\"a\":1,}"), "is not valid JSON");
  rejected(ok_with("{/* c */}"), "is not valid JSON");
}

TEST_CASE("nesting deeper than Boost.JSON's default fails the run",
          "[outcome_check]") {
  passes(nested_arrays(31)); // 32 levels with the object
  rejected(ok_with(nested_arrays(32)),
           "result: \"output\" nests deeper than 32 levels");
  rejected(ok_with(nested_arrays(100000)), "nests deeper than 32 levels");
}

// -- NUL, UTF-8 and numbers ---------------------------------------------------

TEST_CASE("a \\u0000 escape in a string fails the run and names the path",
          "[outcome_check]") {
  auto r = rejected(ok_with(R"({"caption":"a\u0000b"})"),
                    "result: \"output\" contains a NUL character (\\u0000) "
                    "at output.caption");
  CHECK(r.message
        == "result: \"output\" contains a NUL character (\\u0000) at "
           "output.caption");
  rejected(ok_with(R"({"items":[{"x":"ok"},{"x":"\u0000"}]})"),
           "at output.items[1].x");
  rejected(ok_with(R"({"list":["a","b","\u0000"]})"), "at output.list[2]");
}

TEST_CASE("a \\u0000 escape in a key fails the run", "[outcome_check]") {
  rejected(ok_with(R"({"outer":{"bad\u0000key":1}})"),
           "contains a NUL character (\\u0000) in a key at "
           "output.outer.bad\\u0000key");
}

TEST_CASE("a raw NUL byte in the output fails the run", "[outcome_check]") {
  rejected(ok_with(std::string("{\"a\":\"x\0y\"}", 11)),
           "result: \"output\" contains a NUL byte at offset 7");
}

TEST_CASE("an escaped backslash before u0000 is not a NUL", "[outcome_check]") {
  passes(R"({"path":"C:\\u0000"})");
}

TEST_CASE("invalid UTF-8 in the output fails the run", "[outcome_check]") {
  rejected(ok_with("{\"a\":\"\xFF\"}"),
           "result: \"output\" is not valid UTF-8 (byte 0xFF at offset 6)");
  rejected(ok_with("{\"a\":\"\xC3\"}"), "byte 0xC3 at offset 6");
  rejected(ok_with("{\"a\":\"\xC0\xAF\"}"), "not valid UTF-8"); // overlong
  rejected(ok_with("{\"a\":\"\xED\xA0\x80\"}"), "not valid UTF-8"); // surrogate
  rejected(ok_with("{\"a\":\"\xF4\x90\x80\x80\"}"), "not valid UTF-8");
  rejected(ok_with("{\"k\xFE\":1}"), "byte 0xFE at offset 3");
}

TEST_CASE("an unpaired UTF-16 surrogate escape fails the run",
          "[outcome_check]") {
  rejected(ok_with(R"({"a":"\ud800"})"),
           "result: \"output\" contains an unpaired UTF-16 surrogate escape "
           "(\\ud800) at offset 6");
  rejected(ok_with(R"({"a":"\udc00x"})"), "(\\udc00)");
  rejected(ok_with(R"({"a":"\uD83D\u0041"})"), "(\\uD83D)");
  rejected(ok_with(R"({"\ud800":1})"), "unpaired UTF-16 surrogate");
  passes(R"({"a":"\uD83D\uDE00"})");
}

TEST_CASE("numbers beyond a double's range fail the run", "[outcome_check]") {
  rejected(ok_with(R"({"n":1e400})"),
           "result: \"output\" has a number out of range (1e400) at "
           "output.n");
  rejected(ok_with(R"({"a":[-1e999]})"), "(-1e999) at output.a[0]");
  rejected(ok_with(R"({"tiny":1e-400})"), "(1e-400) at output.tiny");
  rejected(ok_with(R"({"tiny":0.5e-330})"), "out of range");
  std::string long_number = "1" + std::string(400, '0');
  rejected(ok_with("{\"n\":" + long_number + "}"),
           "(" + long_number.substr(0, 40) + "...)");
}

// -- messages -----------------------------------------------------------------

TEST_CASE("a long message is cut on a character boundary with a marker",
          "[outcome_check]") {
  outcome_limits lim;
  lim.max_message_bytes = 40;
  std::string msg;
  for (int i = 0; i < 30; ++i)
    msg += "\xC3\xA9"; // é, two bytes
  auto r = check_outcome(error_of(outcome_kind::transient, msg), lim);
  CHECK(r.kind == outcome_kind::transient);
  CHECK(r.message.size() <= 40);
  CHECK(is_valid_utf8(r.message));
  CHECK(r.message.ends_with("\xE2\x80\xA6 (truncated)"));
  CHECK(r.message.starts_with("\xC3\xA9\xC3\xA9"));
}

TEST_CASE("a message of exactly max_message_bytes is kept whole",
          "[outcome_check]") {
  outcome_limits lim;
  lim.max_message_bytes = 10;
  auto r = check_outcome(error_of(outcome_kind::transient, "0123456789"),
                         lim);
  CHECK(r.message == "0123456789");
  r = check_outcome(error_of(outcome_kind::transient, "0123456789x"), lim);
  CHECK(r.message.size() <= 10);
  CHECK(r.message != "0123456789x");
}

TEST_CASE("the default message cap is 2000 bytes", "[outcome_check]") {
  auto r = check_outcome(
    error_of(outcome_kind::permanent, std::string(10000, 'x')), {});
  CHECK(r.message.size() <= 2000);
  CHECK(r.message.size() > 1900);
  CHECK(r.message.ends_with("(truncated)"));
}

TEST_CASE("NUL and invalid UTF-8 in a message become '?'",
          "[outcome_check]") {
  auto r = check_outcome(
    error_of(outcome_kind::transient, std::string("a\0b\xFF" "c", 5)), {});
  CHECK(r.message == "a?b?c");
}

TEST_CASE("a rejection keeps the reported message within the cap",
          "[outcome_check]") {
  outcome_limits lim;
  lim.max_message_bytes = 100;
  auto r = rejected(
    error_of(outcome_kind::transient, std::string(5000, 'y'), -1),
    "result: \"cost\" -1 is negative; reported transient: yyy", lim);
  CHECK(r.message.size() <= 100);
}

TEST_CASE("a negative or NaN retry_after_s becomes none", "[outcome_check]") {
  auto o = error_of(outcome_kind::rate_limited, "429");
  o.retry_after_s = -5;
  CHECK(check_outcome(o, {}).retry_after_s == 0);
  o.retry_after_s = std::numeric_limits<double>::quiet_NaN();
  CHECK(check_outcome(o, {}).retry_after_s == 0);
}

// -- limits of a stage --------------------------------------------------------

TEST_CASE("a stage's limits come from its max_cost and max_output_bytes",
          "[outcome_check]") {
  spool::config::stage_config stage;
  auto d = limits_of(stage);
  CHECK(d.max_cost == 10000);
  CHECK(d.max_output_bytes == 1048576);
  CHECK(d.max_message_bytes == 2000);
  stage.max_cost = 2;
  stage.max_output_bytes = 64;
  auto l = limits_of(stage);
  CHECK(l.max_cost == 2);
  CHECK(l.max_output_bytes == 64);
  rejected(ok_with("{}", 3), "exceeds max_cost 2", l);
}
