#pragma once
// Metrics a process exposes to Prometheus: counters, gauges and histograms
// in labelled families, kept in a registry and rendered in the Prometheus
// text exposition format (version 0.0.4).
//
// Updating a series is lock-free (atomics); finding a series by its label
// values takes the family's mutex, so a hot path keeps the reference it got
// (series live as long as their registry). Names are checked when a family
// is declared: metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
// [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__"; a histogram's label
// may not be "le". Label values may hold anything: rendering escapes them.
//
// Pure logic: no CAF, no I/O.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace spool::metrics {

/// A value that only goes up (events, seconds spent, money spent).
class counter {
public:
  /// Adds `by` (negative or NaN amounts are ignored: a counter never goes down).
  void inc(double by = 1) noexcept;
  double value() const noexcept { return value_.load(std::memory_order_relaxed); }

private:
  std::atomic<double> value_{0};
};

/// A value that goes up and down (runs in flight, tokens in a bucket).
class gauge {
public:
  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(double by) noexcept { value_.fetch_add(by, std::memory_order_relaxed); }
  double value() const noexcept { return value_.load(std::memory_order_relaxed); }

private:
  std::atomic<double> value_{0};
};

/// Observations counted into buckets by upper bound (durations, sizes).
class histogram {
public:
  /// `bounds`: the buckets' upper bounds, increasing; +Inf is implicit.
  explicit histogram(std::vector<double> bounds);
  /// Counts `x` in the first bucket whose bound is >= x (NaN is ignored).
  void observe(double x) noexcept;

  struct reading {
    std::vector<double> bounds;
    /// Cumulative counts, one per bound, then the +Inf bucket (= count).
    std::vector<std::uint64_t> cumulative;
    double sum = 0;
    std::uint64_t count = 0;
  };
  reading read() const;

private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_; // per bucket, +Inf last
  std::atomic<double> sum_{0};
};

/// Bounds for durations in seconds, from 5 ms to an hour.
std::vector<double> duration_buckets();

/// A family: one metric name with its help text and label names, and a
/// series per combination of label values.
template <class Series>
class family {
public:
  family(std::string name, std::string help, std::vector<std::string> labels,
         std::vector<double> bounds = {});

  /// The series with these label values (as many as the family has label
  /// names), made on first use. Throws std::invalid_argument on a wrong
  /// number of values.
  Series& with(const std::vector<std::string>& values);

  /// Drops every series. References to them dangle afterwards: only for
  /// families whose series nobody keeps (an info metric that changes).
  void clear() {
    std::lock_guard guard{mtx_};
    series_.clear();
  }

  const std::string& name() const noexcept { return name_; }
  const std::string& help() const noexcept { return help_; }
  const std::vector<std::string>& labels() const noexcept { return labels_; }

  /// Each series with its label values, in label-value order.
  template <class F>
  void each(F&& f) const {
    std::lock_guard guard{mtx_};
    for (const auto& [values, series] : series_)
      f(values, *series);
  }

private:
  std::string name_;
  std::string help_;
  std::vector<std::string> labels_;
  std::vector<double> bounds_; // histograms only
  mutable std::mutex mtx_;
  std::map<std::vector<std::string>, std::unique_ptr<Series>> series_;
};

/// The families of one process.
class registry {
public:
  /// Declares a family, or returns the one declared under `name` before
  /// (which must be of the same kind and labels). Throws
  /// std::invalid_argument naming the problem for a bad name or label, or a
  /// name declared with another kind or other labels.
  family<counter>& counters(const std::string& name, const std::string& help,
                            const std::vector<std::string>& labels = {});
  family<gauge>& gauges(const std::string& name, const std::string& help,
                        const std::vector<std::string>& labels = {});
  family<histogram>& histograms(const std::string& name, const std::string& help,
                                const std::vector<std::string>& labels = {},
                                std::vector<double> bounds = duration_buckets());

  /// Every family in the text exposition format, families by name, series
  /// by label values.
  std::string render() const;

private:
  struct entry {
    char kind = 0; // 'c', 'g' or 'h' (0: not declared yet)
    std::unique_ptr<family<counter>> c;
    std::unique_ptr<family<gauge>> g;
    std::unique_ptr<family<histogram>> h;
  };
  entry& declare(char kind, const std::string& name, const std::vector<std::string>& labels);

  mutable std::mutex mtx_;
  std::map<std::string, entry> families_;
};

/// A number as the exposition format writes it: integers without a
/// fraction, others with enough digits to read back the same double, and
/// +Inf, -Inf, NaN.
std::string format_value(double x);

/// A label value escaped for the exposition format (\\, \", \n).
std::string escape_label_value(const std::string& v);

} // namespace spool::metrics
