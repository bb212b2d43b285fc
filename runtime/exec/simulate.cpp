#include "runtime/exec/simulate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>

namespace spool::exec {

namespace {

// -- a small local PRNG (splitmix64) ------------------------------------------

constexpr uint64_t mix(uint64_t z) noexcept {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr uint64_t fnv1a(std::string_view s) noexcept {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

class prng {
public:
  explicit prng(uint64_t state) noexcept : state_(state) {
  }

  uint64_t next() noexcept {
    state_ += 0x9e3779b97f4a7c15ULL;
    return mix(state_);
  }

  /// Uniform in [0, 1) with 53 bits of resolution.
  double uniform() noexcept {
    return static_cast<double>(next() >> 11) * 0x1.0p-53;
  }

  /// Standard normal (Box-Muller; one of the pair is discarded).
  double normal() noexcept {
    double u1 = 1.0 - uniform(); // (0, 1]: log stays finite
    double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1))
           * std::cos(2.0 * std::numbers::pi * u2);
  }

private:
  uint64_t state_;
};

double clamp01(double p) noexcept {
  return p > 0 ? std::min(p, 1.0) : 0.0; // NaN -> 0
}

double draw_latency_ms(const simulate_settings& s, prng& rng) noexcept {
  using dist = simulate_settings::dist;
  switch (s.latency) {
    case dist::fixed:
      return s.fixed_ms;
    case dist::uniform: {
      auto [lo, hi] = std::minmax(s.min_ms, s.max_ms);
      return lo + rng.uniform() * (hi - lo);
    }
    case dist::lognormal: {
      if (!(s.p50_ms > 0))
        return 0;
      if (!(s.p99_ms > s.p50_ms))
        return s.p50_ms;
      double mu = std::log(s.p50_ms);
      double sigma = (std::log(s.p99_ms) - mu) / 2.3263;
      return std::exp(mu + sigma * rng.normal());
    }
  }
  return 0;
}

std::chrono::microseconds to_micros(double ms) noexcept {
  constexpr double max_us = 1e15; // about 31 years
  double us = ms * 1000.0;
  if (!(us > 0))
    return std::chrono::microseconds{0}; // also NaN
  return std::chrono::microseconds{std::llround(std::min(us, max_us))};
}

} // namespace

simulated simulate(const simulate_settings& settings, int64_t task_id,
                   std::string_view stage, int attempt) {
  uint64_t h = mix(settings.seed);
  h = mix(h ^ static_cast<uint64_t>(task_id));
  h = mix(h ^ fnv1a(stage));
  h = mix(h ^ static_cast<uint64_t>(static_cast<int64_t>(attempt)));
  prng rng{h};

  // The outcome first, so that changing the latency settings never changes
  // which attempts fail.
  double u = rng.uniform();
  auto kind = outcome_kind::ok;
  double acc = 0;
  for (auto [p, k] : {std::pair{settings.p_transient, outcome_kind::transient},
                      std::pair{settings.p_network, outcome_kind::network},
                      std::pair{settings.p_rate_limited,
                                outcome_kind::rate_limited},
                      std::pair{settings.p_permanent, outcome_kind::permanent},
                      std::pair{settings.p_timeout, outcome_kind::timeout}}) {
    acc += clamp01(p);
    if (u < acc) {
      kind = k;
      break;
    }
  }

  simulated out;
  if (kind == outcome_kind::ok && u < acc + clamp01(settings.p_crash))
    out.crash = true;
  out.latency = to_micros(draw_latency_ms(settings, rng));
  out.result.kind = kind;
  if (kind == outcome_kind::ok) {
    char buf[96];
    int n = std::snprintf(buf, sizeof(buf),
                          R"({"simulated":true,"latency_ms":%.3f})",
                          static_cast<double>(out.latency.count()) / 1000.0);
    out.result.output.assign(buf, static_cast<size_t>(n));
    out.result.cost = settings.cost > 0 ? settings.cost : 0.0;
    return out;
  }
  out.result.message = "simulated ";
  out.result.message += to_string(kind);
  out.result.message += " error";
  if (kind == outcome_kind::rate_limited)
    out.result.retry_after_s =
      settings.retry_after_s > 0 ? settings.retry_after_s : 0.0;
  return out;
}

} // namespace spool::exec
