#include "runtime/strict_json.hpp"

#include <boost/json/basic_parser_impl.hpp>

#include <cstdint>
#include <set>

namespace spool {

namespace json = boost::json;

namespace {

/// A key as it may appear in a message: control characters escaped, at
/// most 40 characters.
std::string printable_key(std::string_view key) {
  constexpr std::size_t max_shown = 40;
  std::string out;
  for (std::size_t i = 0; i < key.size() && out.size() < max_shown; ++i) {
    auto c = static_cast<unsigned char>(key[i]);
    if (c < 0x20) {
      static const char hex[] = "0123456789abcdef";
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (out.size() >= max_shown && key.size() > max_shown)
    out += "...";
  return out;
}

/// A basic_parser handler that records findings as it goes.
class finder {
public:
  static constexpr std::size_t max_array_size = -1;
  static constexpr std::size_t max_object_size = -1;
  static constexpr std::size_t max_string_size = -1;
  static constexpr std::size_t max_key_size = -1;

  explicit finder(std::vector<json_finding>* out) : out_(out) {
  }

  bool on_document_begin(json::error_code&) {
    return true;
  }
  bool on_document_end(json::error_code&) {
    return true;
  }
  bool on_object_begin(json::error_code&) {
    stack_.push_back(frame{true, 0, {}, {}});
    return true;
  }
  bool on_object_end(std::size_t, json::error_code&) {
    stack_.pop_back();
    value_done();
    return true;
  }
  bool on_array_begin(json::error_code&) {
    stack_.push_back(frame{false, 0, {}, {}});
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
  bool on_key(json::string_view s, std::size_t, json::error_code&) {
    key_.append(s.data(), s.size());
    auto& top = stack_.back();
    top.key = std::move(key_);
    key_.clear();
    if (top.key.find('\0') != std::string::npos)
      add(nul_message);
    if (!top.keys.insert(top.key).second)
      add("duplicate key");
    return true;
  }
  bool on_string_part(json::string_view s, std::size_t, json::error_code&) {
    nul_in_string_ = nul_in_string_ || s.find('\0') != json::string_view::npos;
    return true;
  }
  bool on_string(json::string_view s, std::size_t, json::error_code&) {
    if (nul_in_string_ || s.find('\0') != json::string_view::npos)
      add(nul_message);
    nul_in_string_ = false;
    value_done();
    return true;
  }
  bool on_number_part(json::string_view, json::error_code&) {
    return true;
  }
  bool on_int64(std::int64_t, json::string_view, json::error_code&) {
    value_done();
    return true;
  }
  bool on_uint64(std::uint64_t, json::string_view, json::error_code&) {
    value_done();
    return true;
  }
  bool on_double(double, json::string_view, json::error_code&) {
    value_done();
    return true;
  }
  bool on_bool(bool, json::error_code&) {
    value_done();
    return true;
  }
  bool on_null(json::error_code&) {
    value_done();
    return true;
  }
  bool on_comment_part(json::string_view, json::error_code&) {
    return true;
  }
  bool on_comment(json::string_view, json::error_code&) {
    return true;
  }

private:
  static constexpr const char* nul_message =
    "contains U+0000 (\\u0000), which PostgreSQL refuses";

  struct frame {
    bool is_object;
    std::size_t index; // arrays: the current element
    std::string key;   // objects: the current key
    std::set<std::string> keys;
  };

  void value_done() {
    if (!stack_.empty() && !stack_.back().is_object)
      ++stack_.back().index;
  }

  void add(const char* message) {
    out_->push_back(json_finding{path(), message});
  }

  std::string path() const {
    std::string out;
    for (const auto& f : stack_) {
      if (f.is_object) {
        if (!out.empty())
          out += '.';
        out += printable_key(f.key);
      } else {
        out += '[';
        out += std::to_string(f.index);
        out += ']';
      }
    }
    return out;
  }

  std::vector<json_finding>* out_;
  std::vector<frame> stack_;
  std::string key_;
  bool nul_in_string_ = false;
};

} // namespace

std::vector<json_finding> strict_json_findings(std::string_view text,
                                               const json::parse_options& opts) {
  std::vector<json_finding> out;
  json::basic_parser<finder> p(opts, &out);
  json::error_code ec;
  p.write_some(false, text.data(), text.size(), ec);
  return out;
}

} // namespace spool
