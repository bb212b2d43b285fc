// The monitoring files an operator installs (deploy/), checked with
// Prometheus's own promtool (Debian's prometheus package): the alerting rules
// load and pass their unit tests, every alert has a test that fires it and
// one that keeps it quiet, every dashboard query parses, and the Prometheus
// configuration loads with its rule files.

#include "tests/support/cli.hpp"
#include "tests/support/tools.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using spool::test::read_text;
using spool::test::run_shell;
using spool::test::shell_word;

/// The value of a YAML line "<indent><key> value  # comment": the value
/// with the comment and surrounding blanks removed; empty when the line is
/// not that key. Without `any`, only a name ([A-Za-z_][A-Za-z0-9_]*) counts.
std::string value_after(const std::string& line, const std::string& key, bool any = false) {
  auto start = line.find_first_not_of(' ');
  if (start == std::string::npos || line.compare(start, key.size(), key) != 0)
    return {};
  auto v = line.substr(start + key.size());
  if (auto hash = v.find('#'); hash != std::string::npos)
    v.resize(hash);
  auto b = v.find_first_not_of(" \t");
  auto e = v.find_last_not_of(" \t\r");
  if (b == std::string::npos)
    return {};
  v = v.substr(b, e - b + 1);
  if (any)
    return v;
  bool name = !v.empty() && !std::isdigit(static_cast<unsigned char>(v[0]));
  for (char c : v)
    name = name && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
  return name ? v : std::string{};
}

const std::string deploy_dir = SPOOL_SOURCE_DIR "/deploy";


std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  return lines;
}

/// The string at `key` of `o`, or "" when absent or not a string.
std::string string_at(const boost::json::object& o, const char* key) {
  if (auto v = o.if_contains(key))
    if (auto s = v->if_string())
      return std::string(s->c_str(), s->size());
  return {};
}

/// The uid of the data source object at `key` of `o`, or "" when none.
std::string datasource_uid(const boost::json::object& o, const char* key = "datasource") {
  if (auto v = o.if_contains(key))
    if (auto ds = v->if_object())
      return string_at(*ds, "uid");
  return {};
}

/// Every panel of a dashboard, those nested in (collapsed) rows included.
void collect_panels(const boost::json::array& panels, std::vector<boost::json::object>& out) {
  for (const auto& v : panels) {
    if (!v.is_object())
      continue;
    const auto& p = v.as_object();
    out.push_back(p);
    if (auto nested = p.if_contains("panels"))
      if (auto a = nested->if_array())
        collect_panels(*a, out);
  }
}

/// `expr` with Grafana's own variables replaced by durations Prometheus
/// parses (Grafana substitutes them before sending a query).
std::string without_grafana_variables(std::string expr) {
  static const std::pair<const char*, const char*> vars[] = {
    {"$__rate_interval", "1m"}, {"$__interval", "15s"}, {"$__range", "1d"}};
  for (const auto& [name, value] : vars)
    for (auto at = expr.find(name); at != std::string::npos; at = expr.find(name, at))
      expr.replace(at, std::string(name).size(), value);
  return expr;
}

struct panel_query {
  std::string record; // the recording rule's name, dashboard:panel_<id>_<refId>
  std::string title;  // the panel's
  std::string expr;
};

/// A rule file with one recording rule a query.
std::string rule_file(const std::vector<panel_query>& queries) {
  std::string text = "groups:\n  - name: dashboard\n    rules:\n";
  for (const auto& q : queries) {
    text += "      - record: " + q.record + "\n        expr: |\n";
    for (const auto& line : lines_of(q.expr))
      text += "          " + line + "\n";
  }
  return text;
}

/// Runs `promtool check rules` on `text` in a temporary file.
spool::test::tool_result check_rules_text(const std::string& text) {
  auto file = spool::test::temp_file(text, ".yml");
  auto r = run_shell("promtool check rules " + shell_word(file));
  std::remove(file.c_str());
  return r;
}

} // namespace

TEST_CASE("promtool accepts the alerting rules", "[deploy]") {
  auto r =
    run_shell("promtool check rules " + shell_word(deploy_dir + "/prometheus/alerts.yml"));
  INFO(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("SUCCESS"));
}

TEST_CASE("the alerting rules pass their promtool unit tests", "[deploy]") {
  auto r = run_shell("promtool test rules " +
                       shell_word(deploy_dir + "/prometheus/alerts_test.yml"));
  INFO(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("SUCCESS"));
}

TEST_CASE("every alert has a unit test that fires it and one that keeps it quiet",
          "[deploy]") {

  auto rules = read_text(deploy_dir + "/prometheus/alerts.yml");
  REQUIRE_FALSE(rules.empty());
  std::set<std::string> alerts;
  for (const auto& line : lines_of(rules))
    if (auto name = value_after(line, "- alert:"); !name.empty())
      alerts.insert(name);
  REQUIRE(alerts.size() >= 10);

  // In alerts_test.yml each alert_rule_test names its alertname before its
  // exp_alerts: `exp_alerts: []` (quiet) or a list of alerts (fires).
  auto tests = read_text(deploy_dir + "/prometheus/alerts_test.yml");
  REQUIRE_FALSE(tests.empty());
  std::set<std::string> tested, fires, quiet;
  std::string current;
  for (const auto& line : lines_of(tests)) {
    auto name = value_after(line, "- alertname:");
    if (name.empty())
      name = value_after(line, "alertname:");
    auto expected = value_after(line, "exp_alerts:", true);
    if (!name.empty()) {
      current = name;
      tested.insert(current);
    } else if (expected == "[]") {
      quiet.insert(current);
    } else if (line.find("exp_alerts:") != std::string::npos && expected.empty()) {
      fires.insert(current);
    }
  }

  for (const auto& a : alerts) {
    if (tested.count(a) == 0)
      FAIL_CHECK("alert " << a << " has no test in alerts_test.yml");
    else if (fires.count(a) == 0)
      FAIL_CHECK("alert " << a << " has no test where it fires (exp_alerts with its labels)");
    else if (quiet.count(a) == 0)
      FAIL_CHECK("alert " << a << " has no test where it stays quiet (exp_alerts: [])");
  }
  for (const auto& t : tested)
    if (alerts.count(t) == 0)
      FAIL_CHECK("alerts_test.yml tests " << t << ", which alerts.yml does not define");
}

TEST_CASE("every dashboard query parses, and every panel uses the provisioned data source",
          "[deploy]") {
  const std::string uid = "spool-prometheus";
  // The data source provisioned for Grafana has the uid the panels name.
  auto datasource = read_text(deploy_dir + "/grafana/provisioning/datasources/spool.yml");
  CHECK_THAT(datasource, Catch::Contains("uid: " + uid));

  std::set<std::string> files;
  for (const auto& entry :
       std::filesystem::directory_iterator(deploy_dir + "/grafana/dashboards"))
    if (entry.path().extension() == ".json")
      files.insert(entry.path().stem().string());
  for (const char* expected : {"operations", "performance", "business"})
    CHECK(files.count(expected) == 1);

  std::set<std::string> uids;
  for (const auto& name : files) {
    INFO("dashboard " << name << ".json");
    boost::json::value doc;
    REQUIRE_NOTHROW(
      doc = boost::json::parse(read_text(deploy_dir + "/grafana/dashboards/" + name + ".json")));
    REQUIRE(doc.is_object());
    const auto& dash = doc.as_object();
    auto dash_uid = string_at(dash, "uid");
    CHECK_FALSE(dash_uid.empty());
    CHECK(uids.insert(dash_uid).second); // no two dashboards share a uid
    CHECK_FALSE(string_at(dash, "title").empty());

    std::vector<boost::json::object> panels;
    if (auto a = dash.if_contains("panels"); a != nullptr && a->is_array())
      collect_panels(a->as_array(), panels);
    std::vector<panel_query> queries;
    std::set<std::int64_t> ids;
    int shown = 0;
    for (std::size_t i = 0; i < panels.size(); ++i) {
      const auto& p = panels[i];
      auto title = string_at(p, "title");
      std::int64_t id = static_cast<std::int64_t>(i) + 1;
      if (auto v = p.if_contains("id"); v != nullptr && v->is_int64())
        id = v->as_int64();
      if (!ids.insert(id).second)
        FAIL_CHECK("dashboard " << name << ": panel id " << id << " ('" << title
                                << "') is used twice");
      if (string_at(p, "type") == "row")
        continue;
      ++shown;
      if (title.empty())
        FAIL_CHECK("dashboard " << name << ": panel " << id << " has no title");
      if (datasource_uid(p) != uid)
        FAIL_CHECK("dashboard " << name << ", panel '" << title << "': data source uid '"
                                << datasource_uid(p) << "', not " << uid);
      const boost::json::array* targets = nullptr;
      if (auto t = p.if_contains("targets"))
        targets = t->if_array();
      if (targets == nullptr || targets->empty()) {
        FAIL_CHECK("dashboard " << name << ", panel '" << title << "' has no query");
        continue;
      }
      for (const auto& tv : *targets) {
        if (!tv.is_object())
          continue;
        const auto& t = tv.as_object();
        auto ref = string_at(t, "refId");
        auto target_uid = datasource_uid(t);
        if (!target_uid.empty() && target_uid != uid)
          FAIL_CHECK("dashboard " << name << ", panel '" << title << "', query " << ref
                                  << ": data source uid '" << target_uid << "', not " << uid);
        auto expr = string_at(t, "expr");
        if (expr.empty()) {
          FAIL_CHECK("dashboard " << name << ", panel '" << title << "', query " << ref
                                  << " has no expr");
          continue;
        }
        queries.push_back({"dashboard:panel_" + std::to_string(id) + "_" + ref, title,
                           without_grafana_variables(expr)});
      }
    }
    CHECK(shown >= 4);
    REQUIRE_FALSE(queries.empty());

    // Every query as a recording rule: promtool parses them all at once, and
    // when it refuses, one by one to name the panels at fault.
    auto all = check_rules_text(rule_file(queries));
    if (all.exit_code != 0) {
      for (const auto& q : queries) {
        auto one = check_rules_text(rule_file({q}));
        if (one.exit_code != 0)
          FAIL_CHECK("dashboard " << name << ", panel '" << q.title << "': promtool refuses "
                                  << q.expr << "\n"
                                  << one.out);
      }
      INFO(all.out);
      CHECK(all.exit_code == 0);
    }
  }
}

TEST_CASE("promtool accepts the Prometheus configuration and the rule files it names",
          "[deploy]") {
  auto r = run_shell("promtool check config " +
                       shell_word(deploy_dir + "/prometheus/prometheus.yml"));
  INFO(r.out);
  REQUIRE(r.exit_code == 0);
  // rule_files resolve relative to the configuration: alerts.yml was found
  // and checked.
  CHECK_THAT(r.out, Catch::Contains("1 rule files found"));
  CHECK_THAT(r.out, Catch::Contains("alerts.yml"));
}
