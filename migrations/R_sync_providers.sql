-- Writes the limits of the providers a worker's configuration lists.
-- p: the configuration's "providers" array, defaults filled in; "rate",
-- "daily_quota" and "breaker" are absent when not configured:
--   [{"name": "kling", "max_concurrent": 3, "rate": {"per_s": 2, "burst": 4},
--     "daily_quota": {"units": 500, "reset_at": "00:00",
--                     "time_zone": "America/Los_Angeles", "window_s": 86400,
--                     "units_per_call": 1, "units_field": "images"},
--     "breaker": {"consecutive_failures": 5, "failure_rate": 0.5, "window": 20,
--                 "cooldown_s": 30, "probes": 1}}]
-- A listed provider gets these limits and keeps its state: the bucket is
-- refilled under the old rate up to now and clamped to the new burst (full
-- when a rate is new), the breaker keeps its state (reset to closed when the
-- breaker is no longer configured; its failure window trimmed to a smaller
-- window), pauses and quota usage stay. A new provider starts with a full
-- bucket and a closed breaker. Providers not listed are left alone: other
-- workers may run a configuration that lists them.
-- Also deletes quota windows that began more than 35 days ago and logged
-- events older than 30 days. Refuses an unknown time zone or a bad
-- reset_at, naming the provider.
CREATE OR REPLACE FUNCTION spool_sync_providers(p JSONB)
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
  v_now TIMESTAMPTZ := clock_timestamp();
  e RECORD;
BEGIN
  IF jsonb_typeof(p) IS DISTINCT FROM 'array' THEN
    RAISE EXCEPTION 'providers: expected a JSON array, got %', coalesce(jsonb_typeof(p), 'NULL');
  END IF;
  FOR e IN SELECT x.value AS v FROM jsonb_array_elements(p) AS x LOOP
    IF jsonb_typeof(e.v -> 'name') IS DISTINCT FROM 'string' THEN
      RAISE EXCEPTION 'providers: an element has no "name": %', left(e.v::text, 200);
    END IF;
    IF e.v ? 'daily_quota' THEN
      BEGIN
        PERFORM now() AT TIME ZONE coalesce(e.v -> 'daily_quota' ->> 'time_zone', 'UTC'),
                coalesce(e.v -> 'daily_quota' ->> 'reset_at', '00:00')::time;
      EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'provider "%": daily_quota: %', e.v ->> 'name', SQLERRM;
      END;
    END IF;
  END LOOP;

  -- The listed providers' rows, locked in name order as claims lock them;
  -- then their counters, from the limits before this change: the bucket
  -- refilled under the old rate and clamped to the new burst (full when the
  -- rate is new), the bound on calls in flight forgotten when the cap
  -- changes (without a cap no claim keeps it), the quota window forgotten.
  PERFORM 1 FROM spool_providers s
   WHERE s.name IN (SELECT x.v ->> 'name' FROM jsonb_array_elements(p) AS x(v))
   ORDER BY s.name FOR UPDATE;
  UPDATE spool_provider_counters c SET
    tokens = CASE
      WHEN n.burst IS NULL THEN 0
      WHEN s.rate_per_s IS NULL THEN n.burst
      ELSE least(n.burst, s.rate_burst,
                 c.tokens + s.rate_per_s * greatest(0, extract(epoch FROM v_now - c.tokens_at)))
      END,
    tokens_at = v_now,
    inflight_bound = CASE WHEN s.max_concurrent = n.max_concurrent THEN c.inflight_bound END,
    window_start = NULL, -- the quota window is worked out again under the new settings
    window_end = NULL
    FROM spool_providers s,
         (SELECT x.v ->> 'name' AS name,
                 coalesce((x.v ->> 'max_concurrent')::integer, 0) AS max_concurrent,
                 CASE WHEN x.v ? 'rate' THEN coalesce((x.v -> 'rate' ->> 'burst')::float8, 1)
                 END AS burst
            FROM jsonb_array_elements(p) AS x(v)) n
   WHERE c.provider = s.name AND s.name = n.name;

  INSERT INTO spool_providers AS s (
    name, max_concurrent, rate_per_s, rate_burst, quota_units, quota_reset_at, quota_time_zone,
    quota_window_s, quota_units_per_call, quota_units_field, breaker_consecutive,
    breaker_failure_rate, breaker_window, breaker_cooldown_s, breaker_probes, updated_at)
  SELECT x.v ->> 'name',
         coalesce((x.v ->> 'max_concurrent')::integer, 0),
         (x.v -> 'rate' ->> 'per_s')::float8,
         CASE WHEN x.v ? 'rate' THEN coalesce((x.v -> 'rate' ->> 'burst')::float8, 1) END,
         (x.v -> 'daily_quota' ->> 'units')::float8,
         coalesce(x.v -> 'daily_quota' ->> 'reset_at', '00:00')::time,
         coalesce(x.v -> 'daily_quota' ->> 'time_zone', 'UTC'),
         coalesce((x.v -> 'daily_quota' ->> 'window_s')::float8, 86400),
         coalesce((x.v -> 'daily_quota' ->> 'units_per_call')::float8, 1),
         coalesce(x.v -> 'daily_quota' ->> 'units_field', ''),
         CASE WHEN x.v ? 'breaker'
              THEN coalesce((x.v -> 'breaker' ->> 'consecutive_failures')::integer, 5) END,
         CASE WHEN x.v ? 'breaker'
              THEN coalesce((x.v -> 'breaker' ->> 'failure_rate')::float8, 0) END,
         CASE WHEN x.v ? 'breaker'
              THEN coalesce((x.v -> 'breaker' ->> 'window')::integer, 20) END,
         CASE WHEN x.v ? 'breaker'
              THEN coalesce((x.v -> 'breaker' ->> 'cooldown_s')::float8, 30) END,
         CASE WHEN x.v ? 'breaker'
              THEN coalesce((x.v -> 'breaker' ->> 'probes')::integer, 1) END,
         now()
    FROM jsonb_array_elements(p) AS x(v)
   ORDER BY x.v ->> 'name' -- rows locked in name order, as claims lock them
  ON CONFLICT (name) DO UPDATE SET
    max_concurrent = EXCLUDED.max_concurrent,
    rate_per_s = EXCLUDED.rate_per_s,
    rate_burst = EXCLUDED.rate_burst,
    quota_units = EXCLUDED.quota_units,
    quota_reset_at = EXCLUDED.quota_reset_at,
    quota_time_zone = EXCLUDED.quota_time_zone,
    quota_window_s = EXCLUDED.quota_window_s,
    quota_units_per_call = EXCLUDED.quota_units_per_call,
    quota_units_field = EXCLUDED.quota_units_field,
    breaker_consecutive = EXCLUDED.breaker_consecutive,
    breaker_failure_rate = EXCLUDED.breaker_failure_rate,
    breaker_window = EXCLUDED.breaker_window,
    breaker_cooldown_s = EXCLUDED.breaker_cooldown_s,
    breaker_probes = EXCLUDED.breaker_probes,
    breaker_state = CASE WHEN EXCLUDED.breaker_consecutive IS NULL THEN 'closed'
                         ELSE s.breaker_state END,
    consecutive_failures = CASE WHEN EXCLUDED.breaker_consecutive IS NULL THEN 0
                                ELSE s.consecutive_failures END,
    recent_failed = CASE
      WHEN EXCLUDED.breaker_window IS NULL THEN '{}'
      ELSE s.recent_failed[greatest(1, cardinality(s.recent_failed) - EXCLUDED.breaker_window + 1):]
      END,
    opened_at = CASE WHEN EXCLUDED.breaker_consecutive IS NULL THEN NULL ELSE s.opened_at END,
    updated_at = now();
  -- a new provider starts with a full bucket
  INSERT INTO spool_provider_counters (provider, tokens, tokens_at)
  SELECT x.v ->> 'name',
         coalesce((x.v -> 'rate' ->> 'burst')::float8, CASE WHEN x.v ? 'rate' THEN 1 ELSE 0 END),
         v_now
    FROM jsonb_array_elements(p) AS x(v)
  ON CONFLICT (provider) DO NOTHING;

  DELETE FROM spool_provider_usage u WHERE u.window_start < now() - interval '35 days';
  DELETE FROM spool_provider_events v
   WHERE v.logged_by IS NOT NULL AND v.at < now() - interval '30 days';
END $$;
