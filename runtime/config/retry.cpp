#include "runtime/config/retry.hpp"

#include <algorithm>
#include <cmath>

#include <boost/json/object.hpp>

namespace spool::config {

std::chrono::milliseconds backoff(const retry_policy& policy, int k,
                                  std::mt19937_64& rng) {
  auto cap = std::max(0.0, policy.max_delay_s);
  auto base = std::max(0.0, policy.base_s);
  auto seconds = cap;
  if (base == 0) {
    seconds = 0;
  } else {
    auto grown = base * std::pow(std::max(1.0, policy.factor),
                                 std::max(0, k - 1));
    if (std::isfinite(grown))
      seconds = std::min(cap, grown);
  }
  if (policy.jitter > 0 && seconds > 0) {
    auto spread = std::min(1.0, policy.jitter);
    std::uniform_real_distribution<double> dist(-spread, spread);
    seconds = std::clamp(seconds * (1 + dist(rng)), 0.0, cap);
  }
  return to_duration(seconds);
}

retry_decision decide_retry(const retry_policy& policy, outcome_kind kind,
                            int failed_attempts, double retry_after_s,
                            std::mt19937_64& rng) {
  using action = retry_decision::action;
  using std::chrono::milliseconds;
  auto k = std::max(1, failed_attempts);
  switch (kind) {
    case outcome_kind::ok:
    case outcome_kind::cancelled:
      return {action::fail, milliseconds{0}, false};
    case outcome_kind::permanent:
      return {action::fail, milliseconds{0}, true};
    case outcome_kind::rate_limited: {
      auto wait = retry_after_s > 0 ? retry_after_s : policy.base_s;
      return {action::snooze, to_duration(wait), false};
    }
    case outcome_kind::transient:
    case outcome_kind::network:
    case outcome_kind::timeout:
      break;
  }
  if (k > policy.max_retries)
    return {action::fail, milliseconds{0}, true};
  if (kind == outcome_kind::network && k == 1)
    return {action::retry_at, milliseconds{0}, true};
  return {action::retry_at, backoff(policy, k, rng), true};
}

std::chrono::milliseconds
effective_timeout(const stage_config& stage,
                  const boost::json::object& payload) {
  auto factor = 1.0;
  if (!stage.timeout_per.empty()) {
    if (const auto* v = payload.if_contains(stage.timeout_per)) {
      if (v->is_int64())
        factor = static_cast<double>(v->get_int64());
      else if (v->is_uint64())
        factor = static_cast<double>(v->get_uint64());
      else if (v->is_double())
        factor = v->get_double();
    }
  }
  if (!(factor > 1)) // also NaN
    factor = 1;
  return to_duration(stage.timeout_s * factor);
}

} // namespace spool::config
