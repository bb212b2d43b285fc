#include "runtime/config/cost.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace spool::cost {

namespace json = boost::json;

namespace {

/// How many units a payload field counts for; nullopt when it gives no
/// number (absent, null, a string or an object: the caller counts 1).
std::optional<double> units_of(const json::object& payload, const std::string& field) {
  const auto* v = payload.if_contains(field);
  if (v == nullptr)
    return std::nullopt;
  if (v->is_bool())
    return v->get_bool() ? 1.0 : 0.0;
  if (v->is_array())
    return static_cast<double>(v->get_array().size());
  double x;
  if (v->is_double())
    x = v->get_double();
  else if (v->is_int64())
    x = static_cast<double>(v->get_int64());
  else if (v->is_uint64())
    x = static_cast<double>(v->get_uint64());
  else
    return std::nullopt;
  return std::isfinite(x) ? std::max(x, 0.0) : 0.0;
}

/// Whether a `when` field selects its term.
bool is_set(const json::object& payload, const std::string& field) {
  const auto* v = payload.if_contains(field);
  if (v == nullptr || v->is_null())
    return false;
  if (v->is_bool())
    return v->get_bool();
  if (v->is_string())
    return !v->get_string().empty();
  if (v->is_array())
    return !v->get_array().empty();
  if (v->is_object())
    return !v->get_object().empty();
  if (v->is_double())
    return v->get_double() != 0;
  if (v->is_int64())
    return v->get_int64() != 0;
  return v->get_uint64() != 0;
}

term_estimate estimate_term(std::string term, const config::price_term& t,
                            const json::object& payload, std::vector<std::string>& assumed) {
  term_estimate out;
  out.term = std::move(term);
  out.when = t.when;
  out.model = t.model;
  out.per_call = t.per_call;
  out.per_unit = t.per_unit;
  for (const auto& f : t.units) {
    auto u = units_of(payload, f);
    out.factors.emplace_back(f, u.value_or(1));
    out.units *= u.value_or(1);
    if (!u && std::find(assumed.begin(), assumed.end(), f) == assumed.end())
      assumed.push_back(f);
  }
  out.usd = round_usd(std::min(t.per_call + t.per_unit * out.units, max_estimate));
  return out;
}

} // namespace

double round_usd(double usd) noexcept {
  return std::round(usd * 1e6) / 1e6;
}

stage_estimate estimate_stage(const config::stage_config& stage, const json::object& payload) {
  stage_estimate out;
  out.stage = stage.name;
  if (!stage.has_price || (!stage.price.when.empty() && !is_set(payload, stage.price.when)))
    return out;
  if (stage.has_price_instead && is_set(payload, stage.price_instead.when))
    out.terms.push_back(estimate_term("price.instead", stage.price_instead, payload, out.assumed));
  else
    out.terms.push_back(estimate_term("price", stage.price, payload, out.assumed));
  if (stage.has_price_plus && is_set(payload, stage.price_plus.when))
    out.terms.push_back(estimate_term("price.plus", stage.price_plus, payload, out.assumed));
  double sum = 0;
  for (const auto& t : out.terms)
    sum += t.usd;
  out.usd = round_usd(std::min(sum, max_estimate));
  return out;
}

task_estimate estimate_task(const config::snapshot& cfg, const json::object& payload) {
  task_estimate out;
  double sum = 0;
  for (const auto& s : cfg.stages) {
    out.stages.push_back(estimate_stage(s, payload));
    sum += out.stages.back().usd;
  }
  out.usd = round_usd(std::min(sum, max_estimate));
  return out;
}

task_estimate estimate_task(const config::snapshot& cfg, std::string_view payload_json) {
  boost::system::error_code ec;
  auto v = json::parse(payload_json, ec);
  if (ec)
    throw std::invalid_argument("payload: not valid JSON: " + ec.message());
  if (!v.is_object())
    throw std::invalid_argument("payload: must be a JSON object");
  return estimate_task(cfg, v.get_object());
}

} // namespace spool::cost
