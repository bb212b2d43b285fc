// spool providers: each provider's limits and where it stands against them.

#include "cli/commands.hpp"
#include "runtime/pg/connection.hpp"
#include "runtime/store/providers.hpp"

#include <boost/json.hpp>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <iostream>

namespace spool::cli {

namespace {

namespace json = boost::json;
using time_point = std::chrono::system_clock::time_point;

/// "2026-12-03T08:00:00Z".
std::string utc(time_point t) {
  auto secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string number(double x) {
  char buf[32];
  if (std::abs(x - std::round(x)) < 1e-9 && std::abs(x) < 1e15)
    std::snprintf(buf, sizeof buf, "%.0f", x);
  else
    std::snprintf(buf, sizeof buf, "%.2f", x);
  return buf;
}

json::value opt_time(const std::optional<time_point>& t) {
  return t ? json::value(utc(*t)) : json::value(nullptr);
}

json::value opt_number(const std::optional<double>& x) {
  return x ? json::value(*x) : json::value(nullptr);
}

json::object to_json(const store::provider_status& p) {
  json::object o;
  o["name"] = p.name;
  o["max_concurrent"] = p.max_concurrent;
  o["running"] = p.running;
  o["rate_per_s"] = opt_number(p.rate_per_s);
  o["rate_burst"] = opt_number(p.rate_burst);
  o["tokens"] = opt_number(p.tokens);
  o["quota_units"] = opt_number(p.quota_units);
  o["quota_used"] = opt_number(p.quota_used);
  o["quota_remaining"] = opt_number(p.quota_remaining());
  o["quota_window_start"] = opt_time(p.quota_window_start);
  o["quota_resets_at"] = opt_time(p.quota_resets_at);
  o["paused_until"] = opt_time(p.paused_until);
  o["pause_reason"] = p.pause_reason;
  o["breaker"] = p.breaker ? json::value(p.breaker_state) : json::value(nullptr);
  o["consecutive_failures"] = p.consecutive_failures;
  o["recent_calls"] = p.recent_calls;
  o["recent_failures"] = p.recent_failures;
  o["opened_at"] = opt_time(p.opened_at);
  json::array events;
  for (auto& e : p.events)
    events.push_back(json::object{{"at", utc(e.at)},
                                  {"kind", e.kind},
                                  {"message", e.message},
                                  {"logged_by", e.logged_by}});
  o["events"] = std::move(events);
  return o;
}

void print(const store::provider_status& p) {
  std::cout << p.name << "\n";
  std::cout << "  in flight   " << p.running;
  if (p.max_concurrent > 0)
    std::cout << " of " << p.max_concurrent << " (all workers)";
  std::cout << "\n";
  if (p.rate_per_s)
    std::cout << "  rate        " << number(*p.rate_per_s) << "/s, burst "
              << number(p.rate_burst.value_or(1)) << ", tokens now "
              << number(p.tokens.value_or(0)) << "\n";
  if (p.quota_units) {
    double used = p.quota_used.value_or(0);
    std::cout << "  quota       " << number(used) << " of " << number(*p.quota_units)
              << " units used (" << number(100 * used / *p.quota_units) << " %), "
              << number(p.quota_remaining().value_or(*p.quota_units)) << " left";
    if (p.quota_resets_at)
      std::cout << ", resets " << utc(*p.quota_resets_at);
    std::cout << "\n";
  }
  if (p.breaker) {
    std::cout << "  breaker     " << p.breaker_state << ", " << p.consecutive_failures
              << " consecutive failure(s), " << p.recent_failures << " of the last "
              << p.recent_calls << " call(s) failed";
    if (p.opened_at && p.breaker_state != "closed")
      std::cout << ", opened " << utc(*p.opened_at);
    std::cout << "\n";
  }
  if (p.paused_until && *p.paused_until > std::chrono::system_clock::now())
    std::cout << "  PAUSED      until " << utc(*p.paused_until) << ": " << p.pause_reason << "\n";
  for (auto& e : p.events)
    std::cout << "  event       " << utc(e.at) << " " << e.kind << ": " << e.message << "\n";
}

} // namespace

int providers(const global_options& g, bool as_json) {
  pg::connection conn{database_url(g)};
  store::store q{conn};
  auto all = q.providers_status();
  if (as_json) {
    json::array out;
    for (auto& p : all)
      out.push_back(to_json(p));
    std::cout << json::serialize(out) << "\n";
    return 0;
  }
  if (all.empty()) {
    std::cout << "no providers configured (a worker writes its configuration's providers when "
                 "it starts)\n";
    return 0;
  }
  for (auto& p : all)
    print(p);
  return 0;
}

} // namespace spool::cli
