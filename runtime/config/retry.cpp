#include "runtime/config/retry.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

#include <boost/json/object.hpp>

namespace spool::config {

namespace {

/// A configured value as it is written in a file: "86400", "0.5".
std::string plain(double x) {
  if (std::trunc(x) == x && std::fabs(x) < 0x1p53)
    return std::to_string(static_cast<std::int64_t>(x));
  std::array<char, 64> buf;
  auto res = std::to_chars(buf.data(), buf.data() + buf.size(), x);
  return std::string(buf.data(), res.ptr);
}

/// A measured amount of seconds for people: "86,400", "12.5".
std::string readable(double seconds) {
  if (!std::isfinite(seconds))
    return plain(seconds);
  auto millis = std::llround(std::clamp(seconds, -1e15, 1e15) * 1000);
  auto whole = std::llabs(millis / 1000);
  auto frac = std::llabs(millis % 1000);
  auto digits = std::to_string(whole);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  if (frac != 0) {
    auto f = std::to_string(frac + 1000).substr(1); // three digits
    f.erase(f.find_last_not_of('0') + 1);
    out += '.' + f;
  }
  return (millis < 0 ? "-" : "") + out;
}

} // namespace

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
                            double snoozed_s, std::mt19937_64& rng) {
  using action = retry_decision::action;
  using std::chrono::milliseconds;
  auto k = std::max(1, failed_attempts);
  switch (kind) {
    case outcome_kind::ok:
    case outcome_kind::cancelled:
      return {action::fail, milliseconds{0}, false,
              "not a failure (" + std::string(to_string(kind)) + ")"};
    case outcome_kind::permanent:
      return {action::fail, milliseconds{0}, true,
              "permanent error: not retried"};
    case outcome_kind::rate_limited: {
      auto asked = retry_after_s > 0; // false for NaN too
      auto wait = asked ? retry_after_s : policy.base_s;
      if (!(wait > 0))
        wait = 0;
      std::string reason;
      if (wait > policy.max_snooze_s) {
        reason = (asked ? "Retry-After " : "retry.base_s ") + readable(wait)
                 + " s capped at retry.max_snooze_s "
                 + plain(policy.max_snooze_s);
        wait = std::max(0.0, policy.max_snooze_s);
      }
      auto before = snoozed_s > 0 ? snoozed_s : 0.0; // NaN too
      if (before + wait > policy.max_snoozed_total_s)
        return {action::fail, milliseconds{0}, false,
                "rate limited for a total of " + readable(before)
                  + " s; a further " + readable(wait)
                  + " s snooze would exceed retry.max_snoozed_total_s "
                  + plain(policy.max_snoozed_total_s)};
      return {action::snooze, to_duration(wait), false, std::move(reason)};
    }
    case outcome_kind::transient:
    case outcome_kind::network:
    case outcome_kind::timeout:
      break;
  }
  if (k > policy.max_retries)
    return {action::fail, milliseconds{0}, true,
            std::string(to_string(kind)) + " error: " + std::to_string(k)
              + " counted failures, more than retry.max_retries "
              + std::to_string(policy.max_retries)};
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
  if (!std::isfinite(factor) || !(factor > 1)) // also NaN and negatives
    factor = 1;
  auto seconds = stage.timeout_s * factor;
  if (!(seconds <= stage.timeout_max_s)) // also a non-finite product
    seconds = stage.timeout_max_s;
  return to_duration(seconds);
}

} // namespace spool::config
