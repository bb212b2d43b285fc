#include "runtime/exec/outcome_check.hpp"

#include "runtime/utf8.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/error.hpp>
#include <boost/json/parse_options.hpp>

namespace json = boost::json;

namespace spool::exec {

namespace {

// -- text ---------------------------------------------------------------------

/// A reported number as it appears in a message: whole numbers below 2^53
/// as integers ("1000000000"), others in their shortest form ("1e+300",
/// "nan", "inf").
std::string number_text(double d) {
  if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) < 0x1p53)
    return std::to_string(static_cast<std::int64_t>(d));
  std::array<char, 64> buf;
  auto res = std::to_chars(buf.data(), buf.data() + buf.size(), d);
  return std::string(buf.data(), res.ptr);
}

/// Cuts valid UTF-8 `s` to at most `max` bytes on a character boundary,
/// ending in a marker when it was cut (and the marker fits).
void truncate_message(std::string& s, std::size_t max) {
  if (s.size() <= max)
    return;
  constexpr std::string_view marker = "\xE2\x80\xA6 (truncated)"; // "… "
  auto keep = max >= marker.size() ? max - marker.size() : max;
  while (keep > 0 && (static_cast<unsigned char>(s[keep]) & 0xC0) == 0x80)
    --keep;
  s.resize(keep);
  if (max >= marker.size())
    s += marker;
}

/// A key or string for a path in a message: NUL as \u0000, long ones cut.
std::string path_text(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (out.size() >= 80) {
      out += "...";
      break;
    }
    if (c == '\0')
      out += "\\u0000";
    else
      out += c;
  }
  return out;
}

/// The code unit of a `\uXXXX` escape starting at `i`, or -1.
long unicode_escape(std::string_view s, std::size_t i) noexcept {
  if (i + 6 > s.size() || s[i] != '\\' || s[i + 1] != 'u')
    return -1;
  long v = 0;
  for (std::size_t k = 2; k < 6; ++k) {
    auto h = hex_value(s[i + k]);
    if (h < 0)
      return -1;
    v = v * 16 + h;
  }
  return v;
}

// -- output checks ------------------------------------------------------------

constexpr std::string_view output_rule = "result: \"output\" ";

/// output_rule in a string with room for the rest of a message. Out of
/// line: GCC 12 warns falsely (-Warray-bounds) on `std::string(...) + ...`
/// chains it inlines at -O2.
[[gnu::noinline]] std::string rule_text() {
  std::string s;
  s.reserve(160);
  s += output_rule;
  return s;
}

/// Checks raw text: no NUL byte, valid UTF-8, and every UTF-16 surrogate
/// escape inside a string paired. Returns a problem, empty when fine.
std::string check_text(std::string_view text) {
  if (auto nul = text.find('\0'); nul != std::string_view::npos)
    return rule_text() + "contains a NUL byte at offset "
           + std::to_string(nul);
  if (auto i = invalid_utf8_at(text); i != std::string_view::npos) {
    static constexpr char digits[] = "0123456789ABCDEF";
    auto byte = static_cast<unsigned char>(text[i]);
    return rule_text() + "is not valid UTF-8 (byte 0x" + digits[byte >> 4]
           + digits[byte & 0xF] + " at offset " + std::to_string(i) + ")";
  }
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto c = text[i];
    if (!in_string) {
      in_string = c == '"';
      continue;
    }
    if (c == '"') {
      in_string = false;
      continue;
    }
    if (c != '\\')
      continue;
    auto unit = unicode_escape(text, i);
    if (unit < 0) {
      ++i; // an escaped character, e.g. \" or \\ (syntax is checked later)
      continue;
    }
    auto unpaired = false;
    if (unit >= 0xD800 && unit <= 0xDBFF) {
      auto low = unicode_escape(text, i + 6);
      if (low >= 0xDC00 && low <= 0xDFFF)
        i += 6; // the pair
      else
        unpaired = true;
    } else if (unit >= 0xDC00 && unit <= 0xDFFF) {
      unpaired = true;
    }
    if (unpaired)
      return rule_text()
             + "contains an unpaired UTF-16 surrogate escape ("
             + std::string(text.substr(i, 6)) + ") at offset "
             + std::to_string(i);
    i += 5;
  }
  return {};
}

/// A basic_parser handler that checks decoded values: a top-level object,
/// no NUL in keys and strings, numbers within the range of a double.
class output_checker {
public:
  static constexpr std::size_t max_array_size = -1;
  static constexpr std::size_t max_object_size = -1;
  static constexpr std::size_t max_string_size = -1;
  static constexpr std::size_t max_key_size = -1;

  /// The first rule broken; empty when none.
  std::string problem;

  bool on_document_begin(json::error_code&) {
    return true;
  }
  bool on_document_end(json::error_code&) {
    return true;
  }
  bool on_object_begin(json::error_code&) {
    stack_.push_back(frame{true, 0, {}});
    return true;
  }
  bool on_object_end(std::size_t, json::error_code&) {
    stack_.pop_back();
    value_done();
    return true;
  }
  bool on_array_begin(json::error_code& ec) {
    if (!top_level_object("an array", ec))
      return false;
    stack_.push_back(frame{false, 0, {}});
    return true;
  }
  bool on_array_end(std::size_t, json::error_code&) {
    stack_.pop_back();
    value_done();
    return true;
  }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code& ec) {
    key_.append(s.data(), s.size());
    stack_.back().key = std::move(key_);
    key_.clear();
    if (stack_.back().key.find('\0') != std::string::npos)
      return fail(rule_text()
                    + "contains a NUL character (\\u0000) in a key at "
                    + path(),
                  ec);
    return true;
  }
  bool on_string_part(json::string_view s, std::size_t,
                      json::error_code& ec) {
    return string_piece(s, ec);
  }
  bool on_string(json::string_view s, std::size_t, json::error_code& ec) {
    if (!top_level_object("a string", ec) || !string_piece(s, ec))
      return false;
    value_done();
    return true;
  }
  bool on_number_part(json::string_view s, json::error_code&) {
    number_.append(s.data(), s.size());
    return true;
  }
  bool on_int64(std::int64_t, json::string_view, json::error_code& ec) {
    number_.clear();
    return scalar("a number", ec);
  }
  bool on_uint64(std::uint64_t, json::string_view, json::error_code& ec) {
    number_.clear();
    return scalar("a number", ec);
  }
  bool on_double(double d, json::string_view s, json::error_code& ec) {
    number_.append(s.data(), s.size());
    auto text = std::move(number_);
    number_.clear();
    if (!top_level_object("a number", ec))
      return false;
    if (!std::isfinite(d) || (d == 0 && has_nonzero_digit(text))) {
      if (text.size() > 40)
        text = text.substr(0, 40) + "...";
      return fail(rule_text() + "has a number out of range ("
                    + text + ") at " + path(),
                  ec);
    }
    value_done();
    return true;
  }
  bool on_bool(bool, json::error_code& ec) {
    return scalar("a boolean", ec);
  }
  bool on_null(json::error_code& ec) {
    return scalar("null", ec);
  }
  bool on_comment_part(json::string_view, json::error_code&) {
    return true;
  }
  bool on_comment(json::string_view, json::error_code&) {
    return true;
  }

private:
  struct frame {
    bool is_object;
    std::size_t index; // arrays: the current element
    std::string key;   // objects: the current key
  };

  bool fail(std::string message, json::error_code& ec) {
    problem = std::move(message);
    ec = json::error::syntax; // stops the parser; `problem` says why
    return false;
  }

  /// Refuses a document whose top-level value is not an object.
  bool top_level_object(std::string_view got, json::error_code& ec) {
    if (!stack_.empty())
      return true;
    return fail(rule_text() + "must be a JSON object, got "
                  + std::string(got),
                ec);
  }

  bool scalar(std::string_view kind, json::error_code& ec) {
    if (!top_level_object(kind, ec))
      return false;
    value_done();
    return true;
  }

  bool string_piece(json::string_view s, json::error_code& ec) {
    if (std::string_view(s.data(), s.size()).find('\0')
        != std::string_view::npos)
      return fail(rule_text()
                    + "contains a NUL character (\\u0000) at " + path(),
                  ec);
    return true;
  }

  /// Whether the mantissa of a number's text has a digit other than 0.
  static bool has_nonzero_digit(std::string_view text) {
    for (char c : text) {
      if (c == 'e' || c == 'E')
        break;
      if (c >= '1' && c <= '9')
        return true;
    }
    return false;
  }

  void value_done() {
    if (!stack_.empty() && !stack_.back().is_object)
      ++stack_.back().index;
  }

  /// The path of the current value: "output.items[2].caption".
  std::string path() const {
    std::string out = "output";
    for (const auto& f : stack_) {
      if (f.is_object) {
        out += '.';
        out += path_text(f.key);
      } else {
        out += '[';
        out += std::to_string(f.index);
        out += ']';
      }
    }
    return out;
  }

  std::vector<frame> stack_;
  std::string key_;
  std::string number_;
};

/// Checks an ok outcome's output text; returns a problem, empty when fine.
std::string check_output(std::string_view text, std::size_t max_bytes) {
  if (text.size() > max_bytes)
    return rule_text() + "is " + std::to_string(text.size())
           + " bytes, over max_output_bytes " + std::to_string(max_bytes);
  if (auto p = check_text(text); !p.empty())
    return p;
  json::parse_options opts; // strict JSON, Boost.JSON's default depth
  json::basic_parser<output_checker> parser(opts);
  json::error_code ec;
  auto consumed = parser.write_some(false, text.data(), text.size(), ec);
  if (!parser.handler().problem.empty())
    return parser.handler().problem;
  if (ec == json::error::too_deep)
    return rule_text() + "nests deeper than "
           + std::to_string(opts.max_depth) + " levels";
  if (ec)
    return rule_text() + "is not valid JSON: " + ec.message()
           + " at offset " + std::to_string(consumed);
  // write_some stops after one document; anything but whitespace after it
  // is a second value.
  auto rest = text.find_first_not_of(" \t\r\n", consumed);
  if (rest != std::string_view::npos)
    return rule_text()
           + "is not valid JSON: extra data after the object at offset "
           + std::to_string(rest);
  return {};
}

// -- cost checks --------------------------------------------------------------

/// Checks a reported cost; returns a problem, empty when fine.
std::string check_cost(double cost, double max_cost) {
  const std::string rule = "result: \"cost\" " + number_text(cost);
  if (!std::isfinite(cost))
    return rule + " is not a finite number";
  if (cost < 0)
    return rule + " is negative";
  if (!(max_cost <= cost_column_max)) { // also NaN
    if (cost > cost_column_max)
      return rule + " exceeds " + number_text(cost_column_max)
             + ", the most the store records";
  } else if (cost > max_cost) {
    return rule + " exceeds max_cost " + number_text(max_cost);
  }
  return {};
}

} // namespace

outcome_limits limits_of(const config::stage_config& stage) {
  outcome_limits lim;
  lim.max_cost = stage.max_cost;
  lim.max_output_bytes =
    static_cast<std::size_t>(std::max(0, stage.max_output_bytes));
  return lim;
}

spool::outcome check_outcome(spool::outcome o, const outcome_limits& lim) {
  if (!(o.retry_after_s >= 0)) // negative or NaN: none
    o.retry_after_s = 0;
  auto problem = check_cost(o.cost, lim.max_cost);
  if (!problem.empty() && o.kind == outcome_kind::cancelled) {
    o.cost = 0;
    o.message += (o.message.empty() ? "" : "; ") + problem
                 + " (recorded as 0)";
    problem.clear();
  }
  if (problem.empty() && o.kind == outcome_kind::ok)
    problem = check_output(o.output, lim.max_output_bytes);
  if (!problem.empty()) {
    if (!o.message.empty())
      problem += "; reported " + std::string(to_string(o.kind)) + ": "
                 + o.message;
    o.kind = outcome_kind::permanent;
    o.output = "{}";
    o.cost = 0;
    o.retry_after_s = 0;
    o.message = std::move(problem);
  }
  o.message = sanitize_utf8(o.message);
  truncate_message(o.message, lim.max_message_bytes);
  return o;
}

} // namespace spool::exec
