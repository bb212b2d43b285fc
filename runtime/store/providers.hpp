#pragma once
// Provider limits held in the database, so that they hold across every
// worker on every machine: the types of the store's provider methods
// (store::claim_limited, sync_providers, take_provider_events,
// providers_status). The tables are in migrations/0005_providers.up.sql;
// admission at claim time in R_claim.sql and R_provider_admission.sql; what
// outcomes do to a provider in R_provider_outcomes.sql.
//
// A provider's calls in flight are its running stage runs (no counter that a
// dead worker could leak: its slots come back when its runs are rescued).
// Its token bucket, breaker, pause and quota usage change only under its row
// lock, which a claim holds while it admits.

#include "runtime/store/store.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace spool::store {

/// What a claim under a provider's limits got.
struct claim_result {
  /// The runs claimed, in fair order; each names the provider that admitted
  /// it (the stage's provider, or the fallback).
  std::vector<claimed_run> runs;
  /// When held_back is set: how long until the provider may admit again (the
  /// next token, the end of a pause, a breaker cooldown or a quota window).
  /// nullopt: until a running call ends, whose outcome sends a NOTIFY
  /// spool_wakeup for the stage; or not held back.
  std::optional<std::chrono::milliseconds> wait;
  /// Why the limits admitted fewer runs than asked while ready runs remained
  /// (each limit that admits nothing more now, "; "-separated, e.g. "rate 2/s
  /// (burst 4)", "max_concurrent 3 (3 running)", "quota spent until
  /// 2026-12-03 08:00:00+00 (500 of 500 units used)", "breaker open until
  /// ..."; after a fallback "<primary's>; fallback <name>: <its>"). Empty:
  /// the claim was not held back.
  std::string held_back;
  /// The provider the claim was last made under (the fallback when it fell
  /// back); empty when not held back.
  std::string held_provider;
};

/// Something operators should see in a worker's log.
struct provider_event {
  int64_t id = 0;
  std::string provider;
  std::chrono::system_clock::time_point at;
  /// breaker_opened, breaker_half_open, breaker_closed, paused,
  /// quota_warning or quota_exhausted; for cost events (whose `provider` is
  /// their subject: 'total', 'client:<id>', 'task:<id>') budget_warning,
  /// budget_exhausted or cost_overrun.
  std::string kind;
  std::string message;
  /// The worker that took it (empty while none has); in provider_status only.
  std::string logged_by;
  /// The task of a cost_overrun; from take_provider_events only.
  std::optional<int64_t> task_id;
};

/// A provider's limits and state now.
struct provider_status {
  std::string name;

  // -- limits (as last synced) --
  /// Calls in flight across all workers; 0: no cap.
  int max_concurrent = 0;
  /// The token bucket; nullopt: no rate limit.
  std::optional<double> rate_per_s;
  std::optional<double> rate_burst;
  /// Units per quota window; nullopt: no quota.
  std::optional<double> quota_units;
  std::string quota_reset_at; // "HH:MM"
  std::string quota_time_zone;
  double quota_window_s = 86400;
  double quota_units_per_call = 1;
  std::string quota_units_field;
  /// The breaker's limits; nullopt: no breaker.
  struct breaker_limits {
    int consecutive_failures = 5;
    double failure_rate = 0;
    int window = 20;
    double cooldown_s = 30;
    int probes = 1;
  };
  std::optional<breaker_limits> breaker;

  // -- state --
  /// Its stage runs running now (calls in flight).
  int64_t running = 0;
  /// Tokens in the bucket now (refilled; nothing is written); nullopt
  /// without rate.
  std::optional<double> tokens;
  /// Units used in the current quota window, and the window; nullopt
  /// without quota.
  std::optional<double> quota_used;
  std::optional<std::chrono::system_clock::time_point> quota_window_start;
  std::optional<std::chrono::system_clock::time_point> quota_resets_at;
  /// Units left in the current window (nullopt without quota).
  std::optional<double> quota_remaining() const {
    if (!quota_units || !quota_used)
      return std::nullopt;
    return *quota_units - *quota_used;
  }
  /// Set while the provider is paused (it answered "rate limited").
  std::optional<std::chrono::system_clock::time_point> paused_until;
  std::string pause_reason;
  /// closed, open or half_open ("open" also once the cooldown passed, until
  /// a claim turns it half-open).
  std::string breaker_state = "closed";
  int consecutive_failures = 0;
  /// Calls in the failure-rate window, and how many of them failed.
  int recent_calls = 0;
  int recent_failures = 0;
  std::optional<std::chrono::system_clock::time_point> opened_at;
  /// Its last events, newest first.
  std::vector<provider_event> events;
};

} // namespace spool::store
