#pragma once
// Cost estimates from a stage's price model and a task's payload.
//
// A stage's price ("price" in the config) is a term, optionally replaced by
// "price.instead" and extended by "price.plus" when their `when` payload
// fields are set. A term costs per_call + per_unit x units, where units is
// the product of the payload fields it names:
//   - a number counts as itself (a negative one as 0),
//   - an array as its length ("scenes"),
//   - true as 1 and false as 0,
//   - a field that is absent, null, a string or an object counts as 1, and
//     the estimate says so (an assumption, listed with the stage).
// A `when` field is set when it is true, a non-zero number, or a non-empty
// string, array or object.
//
// Estimates are made when a task is enqueued (one per stage run, summed for
// the task unless the task gives its own) and by `spool cost estimate`.
//
// Pure logic: no CAF, no database.

#include "runtime/config/config.hpp"

#include <boost/json/object.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace spool::cost {

/// The largest estimate one stage run or task carries (the columns hold
/// NUMERIC(14, 6)): an absurd payload gives this, never an overflow.
inline constexpr double max_estimate = 1'000'000;

/// What one term of a price model comes to for a payload.
struct term_estimate {
  /// Which term of the stage: "price", "price.instead" or "price.plus".
  std::string term;
  /// Its `when` field (empty for "price" without one).
  std::string when;
  std::string model;
  double per_call = 0;
  double per_unit = 0;
  /// Each unit field with what it counted for.
  std::vector<std::pair<std::string, double>> factors;
  /// The product of the factors (1 without any).
  double units = 1;
  /// per_call + per_unit x units.
  double usd = 0;
};

/// A stage's estimate for one call.
struct stage_estimate {
  std::string stage;
  /// The terms that apply, in order: the base (or its "instead"), then the
  /// "plus". Empty for a free stage or when `price.when` is not set.
  std::vector<term_estimate> terms;
  /// Unit fields counted as 1 because the payload lacks a number for them
  /// ("duration_s absent, counted as 1").
  std::vector<std::string> assumed;
  /// Sum of the terms, at most max_estimate.
  double usd = 0;
};

/// A task's estimate: every stage of the pipeline, in the configuration's
/// order.
struct task_estimate {
  std::vector<stage_estimate> stages;
  /// Sum of the stages, at most max_estimate.
  double usd = 0;
};

/// The estimate of one call of `stage` for `payload`.
stage_estimate estimate_stage(const config::stage_config& stage,
                              const boost::json::object& payload);

/// The estimate of a task of `cfg`'s pipeline for `payload`.
task_estimate estimate_task(const config::snapshot& cfg, const boost::json::object& payload);

/// The same for a payload given as JSON text; throws std::invalid_argument
/// naming the problem when it is not a JSON object.
task_estimate estimate_task(const config::snapshot& cfg, std::string_view payload_json);

/// An amount in USD as the database keeps it: rounded to the micro-dollar.
double round_usd(double usd) noexcept;

} // namespace spool::cost
