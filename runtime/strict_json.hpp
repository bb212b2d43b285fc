#pragma once
// What boost::json::parse lets through silently but Spool refuses in input:
// a key repeated within one object (parse keeps the last one) and U+0000 in
// a key or string (PostgreSQL's jsonb and text refuse it). One streaming
// pass over the text, so the check costs no second document in memory.

#include <boost/json/parse_options.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace spool {

/// One finding, with the path of the key or value it is about:
/// "payload.title", "stages[1].name"; empty for the document itself.
struct json_finding {
  std::string path;
  /// "duplicate key", or "contains U+0000 (\u0000), which PostgreSQL refuses".
  std::string message;
};

/// Scans `text`, which must be valid JSON under `opts` (parse it first: on a
/// syntax error the scan stops and reports what it found until then).
/// Keys in paths are shown with control characters escaped and cut to 40
/// characters, so a path never echoes a huge or unprintable key.
std::vector<json_finding> strict_json_findings(std::string_view text,
                                               const boost::json::parse_options& opts = {});

} // namespace spool
