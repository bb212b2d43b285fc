// spool cost estimate: a task's estimate under the configured prices.
// spool cost report: a budget day's spend, with estimates against actuals.

#include "cli/commands.hpp"
#include "runtime/config/cost.hpp"
#include "runtime/pg/connection.hpp"
#include "runtime/store/task_input.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <stdexcept>

namespace spool::cli {

namespace {

namespace json = boost::json;

/// USD to the cent when that is exact, else to the micro-dollar, without
/// trailing zeros past the cents: "3.00", "0.009", "6.268".
std::string usd(double x) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.6f", x);
  std::string s = buf;
  while (s.size() > 1 && s.back() == '0' && s[s.size() - 3] != '.')
    s.pop_back();
  return s;
}

std::string ratio(double x) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  return buf;
}

std::string number(double x) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

/// "duration_s 30 x variations 1": a term's unit fields with their values.
std::string factors_text(const cost::term_estimate& t) {
  std::string out;
  for (const auto& [field, value] : t.factors)
    out += (out.empty() ? "" : " x ") + field + " " + number(value);
  return out.empty() ? "1 unit" : out;
}

json::object payload_object(const std::string& text) {
  auto task = store::make_task("estimate", "normal", "", "", text);
  return json::parse(task.payload).as_object();
}

} // namespace

int cost_estimate(const global_options& g, const std::string& config, const std::string& payload,
                  bool as_json) {
  auto cfg = load_config_source(g, config).config;
  auto obj = payload_object(payload); // checked as an enqueue checks it
  auto e = cost::estimate_task(*cfg, obj);
  if (as_json) {
    json::array stages;
    for (size_t i = 0; i < e.stages.size(); ++i) {
      const auto& s = e.stages[i];
      json::array terms;
      for (const auto& t : s.terms) {
        json::object factors;
        for (const auto& [field, value] : t.factors)
          factors[field] = value;
        terms.push_back(json::object{{"term", t.term}, {"model", t.model},
                                     {"per_call", t.per_call}, {"per_unit", t.per_unit},
                                     {"factors", factors}, {"units", t.units}, {"usd", t.usd}});
      }
      json::array assumed;
      for (const auto& a : s.assumed)
        assumed.emplace_back(a);
      stages.push_back(json::object{{"stage", s.stage}, {"usd", s.usd}, {"terms", terms},
                                    {"assumed_1", assumed}});
    }
    std::cout << json::serialize(json::object{{"usd", e.usd}, {"stages", stages}}) << "\n";
    return 0;
  }
  std::printf("%-14s %-22s %-10s %s\n", "stage", "model", "USD", "how");
  for (size_t i = 0; i < e.stages.size(); ++i) {
    const auto& s = e.stages[i];
    const auto& stage = cfg->stages[i];
    if (s.terms.empty()) {
      std::printf("%-14s %-22s %-10s %s\n", s.stage.c_str(), "-", usd(0).c_str(),
                  stage.has_price ? ("free: " + stage.price.when + " not set").c_str()
                                  : "free (no price)");
      continue;
    }
    for (size_t k = 0; k < s.terms.size(); ++k) {
      const auto& t = s.terms[k];
      std::string how;
      if (t.per_call > 0)
        how = usd(t.per_call) + " a call";
      if (t.per_unit > 0)
        how += (how.empty() ? "" : " + ") + usd(t.per_unit) + " x " + factors_text(t);
      if (t.term != "price")
        how += " (" + t.term + ": " + t.when + ")";
      std::printf("%-14s %-22s %-10s %s\n", k == 0 ? s.stage.c_str() : "",
                  t.model.empty() ? "-" : t.model.c_str(), usd(t.usd).c_str(), how.c_str());
    }
    for (const auto& a : s.assumed)
      std::printf("%-14s %-22s %-10s %s\n", "", "", "", (a + " not in the payload: counted as 1").c_str());
  }
  std::printf("%-14s %-22s %s\n", "total", "", usd(e.usd).c_str());
  return 0;
}

int cost_report(const global_options& g, const std::string& day, const std::string& by,
                bool as_json) {
  if (!day.empty()) {
    bool ok = day.size() == 10 && day[4] == '-' && day[7] == '-';
    for (size_t i = 0; ok && i < day.size(); ++i)
      if (i != 4 && i != 7)
        ok = day[i] >= '0' && day[i] <= '9';
    if (ok) {
      using namespace std::chrono;
      year_month_day ymd{year{std::stoi(day.substr(0, 4))},
                         month{static_cast<unsigned>(std::stoi(day.substr(5, 2)))},
                         std::chrono::day{static_cast<unsigned>(std::stoi(day.substr(8, 2)))}};
      ok = ymd.ok();
    }
    if (!ok)
      throw std::invalid_argument("--day: must be a date YYYY-MM-DD, got '" + day + "'");
  }
  pg::connection conn{database_url(g)};
  auto res = conn.exec(
    "SELECT day::text, key, spent::float8, reserved::float8, tasks, estimated::float8, "
    "actual::float8 FROM spool_cost_report($1::date, $2)",
    {day.empty() ? std::nullopt : std::optional<std::string>{day}, by}, "reading the spend");
  std::string the_day = res.rows() > 0 ? res.str(0, 0) : day;
  if (as_json) {
    json::array rows;
    for (int i = 0; i < res.rows(); ++i)
      rows.push_back(json::object{{"key", res.str(i, 1)}, {"spent", res.f64(i, 2)},
                                  {"reserved", res.f64(i, 3)}, {"tasks", res.i64(i, 4)},
                                  {"estimated", res.f64(i, 5)}, {"actual", res.f64(i, 6)}});
    std::cout << json::serialize(json::object{{"day", the_day}, {"by", by}, {"rows", rows}})
              << "\n";
    return 0;
  }
  std::printf("budget day %s%s\n", the_day.c_str(), by.empty() ? "" : (", by " + by).c_str());
  std::printf("%-24s %12s %12s %8s %12s %12s %8s\n", by.empty() ? "" : by.c_str(), "spent USD",
              "reserved", "tasks", "estimated", "actual", "act/est");
  for (int i = 0; i < res.rows(); ++i) {
    double est = res.f64(i, 5), act = res.f64(i, 6);
    auto key = res.str(i, 1);
    std::printf("%-24s %12s %12s %8lld %12s %12s %8s\n",
                key.empty() ? (by.empty() ? "total" : "(none)") : key.c_str(),
                usd(res.f64(i, 2)).c_str(), usd(res.f64(i, 3)).c_str(),
                static_cast<long long>(res.i64(i, 4)), usd(est).c_str(), usd(act).c_str(),
                est > 0 ? ratio(act / est).c_str() : "-");
  }
  if (res.rows() == 0)
    std::printf("(nothing spent or enqueued that day)\n");
  return 0;
}

} // namespace spool::cli
