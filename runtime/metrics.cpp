#include "runtime/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace spool::metrics {

namespace {

bool name_char(char c, bool first, bool colon) {
  bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  bool digit = c >= '0' && c <= '9';
  return alpha || (colon && c == ':') || (!first && digit);
}

void check_name(const std::string& name, bool metric) {
  bool ok = !name.empty();
  for (size_t i = 0; ok && i < name.size(); ++i)
    ok = name_char(name[i], i == 0, metric);
  if (!ok)
    throw std::invalid_argument(std::string(metric ? "metric" : "label") + " name '" + name
                                + "' must match "
                                + (metric ? "[a-zA-Z_:][a-zA-Z0-9_:]*" : "[a-zA-Z_][a-zA-Z0-9_]*"));
  if (!metric && name.rfind("__", 0) == 0)
    throw std::invalid_argument("label name '" + name + "' must not start with __ (reserved)");
}

/// `v` with backslash and newline escaped, and double quotes when `quotes`
/// (a label value; a HELP text keeps them).
std::string escaped(const std::string& v, bool quotes) {
  std::string out;
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (quotes && c == '"')
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

/// {a="x",b="y"} for these names and values, plus one more pair (le) when
/// given; empty without any.
std::string label_text(const std::vector<std::string>& names,
                       const std::vector<std::string>& values, const std::string& extra_name = {},
                       const std::string& extra_value = {}) {
  if (names.empty() && extra_name.empty())
    return {};
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i)
      out += ',';
    out += names[i] + "=\"" + escape_label_value(values[i]) + '"';
  }
  if (!extra_name.empty()) {
    if (!names.empty())
      out += ',';
    out += extra_name + "=\"" + extra_value + '"';
  }
  return out + "}";
}

} // namespace

std::string format_value(double x) {
  if (std::isnan(x))
    return "NaN";
  if (std::isinf(x))
    return x > 0 ? "+Inf" : "-Inf";
  char buf[40];
  if (x == std::floor(x) && std::abs(x) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", x);
    return buf;
  }
  // The shortest text that reads back as the same double ("0.1", not
  // "0.10000000000000001").
  auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::general);
  return std::string(buf, r.ptr);
}

std::string escape_label_value(const std::string& v) {
  return escaped(v, true);
}

// -- series ---------------------------------------------------------------------

void counter::inc(double by) noexcept {
  if (by > 0)
    value_.fetch_add(by, std::memory_order_relaxed);
}

histogram::histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  counts_ = std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i)
    counts_[i].store(0, std::memory_order_relaxed);
}

void histogram::observe(double x) noexcept {
  if (std::isnan(x))
    return;
  auto at = std::lower_bound(bounds_.begin(), bounds_.end(), x) - bounds_.begin();
  counts_[static_cast<size_t>(at)].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(x, std::memory_order_relaxed);
}

histogram::reading histogram::read() const {
  reading r;
  r.bounds = bounds_;
  std::uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    r.cumulative.push_back(running);
  }
  r.count = running;
  r.sum = sum_.load(std::memory_order_relaxed);
  return r;
}

std::vector<double> duration_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,   2.5,  5,
          10,    30,   60,    120,  300, 600,  900, 1800, 3600};
}

// -- families -------------------------------------------------------------------

template <class Series>
family<Series>::family(std::string name, std::string help, std::vector<std::string> labels,
                       std::vector<double> bounds)
  : name_(std::move(name)), help_(std::move(help)), labels_(std::move(labels)),
    bounds_(std::move(bounds)) {
}

template <class Series>
Series& family<Series>::with(const std::vector<std::string>& values) {
  if (values.size() != labels_.size())
    throw std::invalid_argument("metric " + name_ + ": " + std::to_string(values.size())
                                + " label value(s) for " + std::to_string(labels_.size())
                                + " label(s)");
  std::lock_guard guard{mtx_};
  auto& slot = series_[values];
  if (!slot) {
    if constexpr (std::is_same_v<Series, histogram>)
      slot = std::make_unique<histogram>(bounds_);
    else
      slot = std::make_unique<Series>();
  }
  return *slot;
}

template class family<counter>;
template class family<gauge>;
template class family<histogram>;

// -- registry -------------------------------------------------------------------

registry::entry& registry::declare(char kind, const std::string& name,
                                   const std::vector<std::string>& labels) {
  check_name(name, true);
  for (const auto& l : labels) {
    check_name(l, false);
    if (kind == 'h' && l == "le")
      throw std::invalid_argument("histogram " + name + ": the label name le is reserved");
  }
  auto& e = families_[name];
  if (e.kind != 0) {
    const auto& have = e.kind == 'c' ? e.c->labels() : e.kind == 'g' ? e.g->labels()
                                                                     : e.h->labels();
    if (e.kind != kind || have != labels)
      throw std::invalid_argument("metric " + name
                                  + " is declared already with another kind or other labels");
  }
  e.kind = kind;
  return e;
}

family<counter>& registry::counters(const std::string& name, const std::string& help,
                                    const std::vector<std::string>& labels) {
  std::lock_guard guard{mtx_};
  auto& e = declare('c', name, labels);
  if (!e.c)
    e.c = std::make_unique<family<counter>>(name, help, labels);
  return *e.c;
}

family<gauge>& registry::gauges(const std::string& name, const std::string& help,
                                const std::vector<std::string>& labels) {
  std::lock_guard guard{mtx_};
  auto& e = declare('g', name, labels);
  if (!e.g)
    e.g = std::make_unique<family<gauge>>(name, help, labels);
  return *e.g;
}

family<histogram>& registry::histograms(const std::string& name, const std::string& help,
                                        const std::vector<std::string>& labels,
                                        std::vector<double> bounds) {
  if (!std::is_sorted(bounds.begin(), bounds.end())
      || std::adjacent_find(bounds.begin(), bounds.end()) != bounds.end()
      || std::any_of(bounds.begin(), bounds.end(), [](double b) { return !std::isfinite(b); }))
    throw std::invalid_argument("histogram " + name
                                + ": bucket bounds must be finite and increasing");
  std::lock_guard guard{mtx_};
  auto& e = declare('h', name, labels);
  if (!e.h)
    e.h = std::make_unique<family<histogram>>(name, help, labels, std::move(bounds));
  return *e.h;
}

std::string registry::render() const {
  std::lock_guard guard{mtx_};
  std::string out;
  for (const auto& [name, e] : families_) {
    const char* type = e.kind == 'c' ? "counter" : e.kind == 'g' ? "gauge" : "histogram";
    const auto& help = e.kind == 'c' ? e.c->help() : e.kind == 'g' ? e.g->help() : e.h->help();
    out += "# HELP " + name + " " + escaped(help, false) + "\n";
    out += "# TYPE " + name + " " + type + "\n";
    if (e.kind == 'c') {
      e.c->each([&](const std::vector<std::string>& values, const counter& c) {
        out += name + label_text(e.c->labels(), values) + " " + format_value(c.value()) + "\n";
      });
    } else if (e.kind == 'g') {
      e.g->each([&](const std::vector<std::string>& values, const gauge& g) {
        out += name + label_text(e.g->labels(), values) + " " + format_value(g.value()) + "\n";
      });
    } else {
      e.h->each([&](const std::vector<std::string>& values, const histogram& h) {
        auto r = h.read();
        const auto& labels = e.h->labels();
        for (size_t i = 0; i < r.bounds.size(); ++i)
          out += name + "_bucket" + label_text(labels, values, "le", format_value(r.bounds[i]))
                 + " " + std::to_string(r.cumulative[i]) + "\n";
        out += name + "_bucket" + label_text(labels, values, "le", "+Inf") + " "
               + std::to_string(r.count) + "\n";
        out += name + "_sum" + label_text(labels, values) + " " + format_value(r.sum) + "\n";
        out += name + "_count" + label_text(labels, values) + " " + std::to_string(r.count)
               + "\n";
      });
    }
  }
  return out;
}

} // namespace spool::metrics
