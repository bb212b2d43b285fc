#include "runtime/outcome.hpp"

namespace spool {

std::string_view to_string(outcome_kind k) noexcept {
  switch (k) {
    case outcome_kind::ok:
      return "ok";
    case outcome_kind::transient:
      return "transient";
    case outcome_kind::network:
      return "network";
    case outcome_kind::rate_limited:
      return "rate_limited";
    case outcome_kind::permanent:
      return "permanent";
    case outcome_kind::timeout:
      return "timeout";
    case outcome_kind::cancelled:
      return "cancelled";
  }
  return "unknown";
}

std::optional<outcome_kind> parse_error_class(std::string_view s) noexcept {
  for (auto k : {outcome_kind::transient, outcome_kind::network,
                 outcome_kind::rate_limited, outcome_kind::permanent,
                 outcome_kind::timeout})
    if (s == to_string(k))
      return k;
  return std::nullopt;
}

} // namespace spool
