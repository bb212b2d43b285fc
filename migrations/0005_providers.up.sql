-- 0005_providers: limits of external services (a video API, an LLM, an
-- upload), held in the database so that they hold across every worker on
-- every machine. Claims admit runs under them (R_claim.sql with
-- R_provider_admission.sql); outcomes move the breaker and pauses
-- (R_provider_outcomes.sql); store::sync_providers writes the limits
-- (R_sync_providers.sql).
--
-- spool_providers: one row per provider. The limits are the configuration's
--   (NULL columns: that limit is not configured); the state is shared by
--   every worker and changes only under the row's lock, which a claim holds
--   while it admits (so admissions of one provider are serialized, and
--   claims of other providers never wait for them).
--   tokens/tokens_at: the token bucket as of tokens_at (refilled lazily:
--     tokens + rate_per_s * seconds since tokens_at, at most rate_burst).
--   breaker_state: closed, open (since opened_at; half-open once
--     breaker_cooldown_s passed) or half_open (breaker_probes calls may run).
--   recent_failed: whether each of the last breaker_window calls that
--     counted failed, oldest first (the failure-rate rule).
--   paused_until/pause_reason: a provider that answered "rate limited"
--     (HTTP 429) admits nothing until then.
--   waiting_stages: stages whose last claim was held back until a running
--     call of this provider ends (max_concurrent full, probes running); the
--     end of such a call NOTIFYs spool_wakeup for them and clears the list.
--   There is no in-flight counter: the calls in flight are the running
--   stage_runs with this provider (stage_runs_provider_idx), so a worker that
--   dies gives its slots back exactly when the rescuer returns its runs.
-- spool_provider_usage: units used per quota window (window_start: see
--   spool_quota_window in R_provider_admission.sql). warned_80 and
--   exhausted_logged make the 80% and 100% events happen once per window.
--   store::sync_providers deletes windows that began more than 35 days ago.
-- spool_provider_events: what operators should see in a worker's log
--   (breaker transitions, pauses, quota warnings). Each is taken (logged_by
--   set) by exactly one worker (store::take_provider_events);
--   store::sync_providers deletes logged events older than 30 days.
-- stage_runs.provider: the provider that admitted the run's current (or
--   last) claim, kept after the run ends so that its output records which
--   provider made it; NULL for a claim without provider.
-- stage_runs.units_charged: quota units the current claim took (NULL: the
--   provider has no quota); a release gives them back.
-- stage_attempts.provider: the provider of each attempt.
--
-- Operational: the ALTERs add nullable columns (no table rewrite); the
-- partial index is built with a short lock on stage_runs (it covers running
-- runs with a provider: none before this migration).

CREATE TABLE IF NOT EXISTS spool_providers (
  name                 TEXT PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  -- limits
  max_concurrent       INTEGER NOT NULL DEFAULT 0 CHECK (max_concurrent >= 0),
  rate_per_s           FLOAT8 CHECK (rate_per_s > 0),
  rate_burst           FLOAT8 CHECK (rate_burst >= 1),
  quota_units          FLOAT8 CHECK (quota_units > 0),
  quota_reset_at       TIME NOT NULL DEFAULT '00:00',
  quota_time_zone      TEXT NOT NULL DEFAULT 'UTC',
  quota_window_s       FLOAT8 NOT NULL DEFAULT 86400 CHECK (quota_window_s > 0),
  quota_units_per_call FLOAT8 NOT NULL DEFAULT 1 CHECK (quota_units_per_call >= 0),
  quota_units_field    TEXT NOT NULL DEFAULT '',
  breaker_consecutive  INTEGER CHECK (breaker_consecutive >= 1),
  breaker_failure_rate FLOAT8 CHECK (breaker_failure_rate BETWEEN 0 AND 1),
  breaker_window       INTEGER CHECK (breaker_window >= 1),
  breaker_cooldown_s   FLOAT8 CHECK (breaker_cooldown_s > 0),
  breaker_probes       INTEGER CHECK (breaker_probes >= 1),
  -- state
  tokens               FLOAT8 NOT NULL DEFAULT 0,
  tokens_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
  breaker_state        TEXT NOT NULL DEFAULT 'closed'
                         CHECK (breaker_state IN ('closed', 'open', 'half_open')),
  consecutive_failures INTEGER NOT NULL DEFAULT 0,
  recent_failed        BOOLEAN[] NOT NULL DEFAULT '{}',
  opened_at            TIMESTAMPTZ,
  paused_until         TIMESTAMPTZ,
  pause_reason         TEXT,
  waiting_stages       TEXT[] NOT NULL DEFAULT '{}',
  updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
  CHECK ((rate_per_s IS NULL) = (rate_burst IS NULL)),
  CHECK ((breaker_consecutive IS NULL) = (breaker_probes IS NULL))
);

CREATE TABLE IF NOT EXISTS spool_provider_usage (
  provider         TEXT NOT NULL REFERENCES spool_providers (name) ON DELETE CASCADE,
  window_start     TIMESTAMPTZ NOT NULL,
  units            FLOAT8 NOT NULL DEFAULT 0,
  warned_80        BOOLEAN NOT NULL DEFAULT false,
  exhausted_logged BOOLEAN NOT NULL DEFAULT false,
  PRIMARY KEY (provider, window_start)
);

CREATE TABLE IF NOT EXISTS spool_provider_events (
  id        BIGSERIAL PRIMARY KEY,
  provider  TEXT NOT NULL,
  at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
  kind      TEXT NOT NULL CHECK (kind IN ('breaker_opened', 'breaker_half_open',
                                          'breaker_closed', 'paused', 'quota_warning',
                                          'quota_exhausted')),
  message   TEXT NOT NULL,
  logged_by TEXT
);
-- Events not yet logged, oldest first (what workers take).
CREATE INDEX IF NOT EXISTS spool_provider_events_unlogged_idx
  ON spool_provider_events (id) WHERE logged_by IS NULL;
-- A provider's last events (status).
CREATE INDEX IF NOT EXISTS spool_provider_events_provider_idx
  ON spool_provider_events (provider, id);

ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS provider TEXT;
ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS units_charged FLOAT8;
ALTER TABLE stage_attempts ADD COLUMN IF NOT EXISTS provider TEXT;

-- Calls in flight per provider. Only runs with a provider are in it, so
-- claims without one write no entry.
CREATE INDEX IF NOT EXISTS stage_runs_provider_idx
  ON stage_runs (provider) WHERE state = 'running' AND provider IS NOT NULL;
