-- What the outcomes of calls tell about their providers; spool_record_outcomes
-- (R_record_outcomes.sql) calls it with the accepted outcomes of runs that a
-- provider admitted, in parallel arrays:
--   kind ok                                       a success
--   kind retry or fail, class transient, network
--     or timeout (also the stuck sweep's timeouts) a failure
--   kind snooze, class rate_limited, delay > 0   the provider answered "rate
--                                                limited": it admits nothing
--                                                until now + delay (the later
--                                                of that and a pause it has)
--   anything else (permanent, release, lost to a rescue, a cancel, a
--   rate-limited run that exhausted its snooze budget) is neutral.
-- The breaker (when configured): a success resets the consecutive failures
-- and closes a half-open breaker (forgetting the failure-rate window); a
-- failure counts, and opens a closed breaker after breaker_consecutive
-- failures in a row or, with breaker_failure_rate > 0, once at least
-- breaker_window calls were seen and that share of the last breaker_window
-- failed; a half-open breaker's failure opens it again. While it is open,
-- outcomes of calls that started before only update the counters.
-- Events: breaker_opened, breaker_closed, paused (once per provider per call,
-- when a pause begins or is extended).
-- A release (the call never started) gives its units_charged back to the
-- quota window its claim was charged to (the window holding claimed_at, as
-- the provider's window is configured now; a window that no longer exists
-- gets nothing back).
-- Wake-ups: when a provider has max_concurrent or a half-open breaker (before
-- or after these outcomes), every run that ended freed a slot: NOTIFY
-- spool_wakeup for its stage and for the stages whose claims wait for such a
-- slot (waiting_stages), once per stage per call.
--
-- Locks provider rows in name order, after the runs and tasks the caller
-- holds; claims lock provider rows and then only runs they skip-lock, so the
-- two queue on provider rows without deadlocking.
-- Whether provider row p needs nothing from outcomes that are neutral to
-- it: its breaker is closed with no failure counted and no failure-rate
-- window, and no stage waits for its slots.
CREATE OR REPLACE FUNCTION spool_provider_quiet(p spool_providers)
RETURNS BOOLEAN LANGUAGE sql IMMUTABLE AS $$
  SELECT coalesce(p.breaker_state, 'closed') = 'closed' AND p.consecutive_failures = 0
         AND coalesce(p.breaker_failure_rate, 0) = 0 AND cardinality(p.waiting_stages) = 0
$$;

-- Whether an outcome (kind, error class, units charged) tells its provider
-- something: a failure that counts, a "rate limited", or a release that gives
-- units back.
CREATE OR REPLACE FUNCTION spool_outcome_tells(p_kind TEXT, p_class TEXT, p_units FLOAT8)
RETURNS BOOLEAN LANGUAGE sql IMMUTABLE AS $$
  SELECT coalesce((p_kind IN ('retry', 'fail') AND p_class IN ('transient', 'network', 'timeout'))
                  OR (p_kind = 'snooze' AND p_class = 'rate_limited')
                  OR (p_kind = 'release' AND p_units > 0), false)
$$;

-- Whether spool_provider_outcomes has anything to do for these outcomes
-- (the arrays as it takes them): one query, so that the common batch of
-- successes of quiet providers costs a recording one statement. (PL/pgSQL,
-- not SQL: its plan is kept for the session; a SQL function with subqueries
-- is planned again at every call.)
CREATE OR REPLACE FUNCTION spool_provider_outcomes_needed(p_providers TEXT[], p_kinds TEXT[],
                                                          p_classes TEXT[], p_units FLOAT8[])
RETURNS BOOLEAN LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM unnest(p_kinds, p_classes, p_units) AS x(kind, class, units)
                  WHERE spool_outcome_tells(x.kind, x.class, x.units))
      OR EXISTS (SELECT 1 FROM spool_providers s
                  WHERE s.name = ANY (p_providers) AND NOT spool_provider_quiet(s));
END $$;

CREATE OR REPLACE FUNCTION spool_provider_outcomes(
  p_providers TEXT[], p_stages TEXT[], p_kinds TEXT[], p_classes TEXT[], p_delays_ms BIGINT[],
  p_units FLOAT8[], p_claimed TIMESTAMPTZ[])
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
  v_name TEXT;
  p spool_providers;
  o RECORD;
  v_now TIMESTAMPTZ;
  v_state TEXT;
  v_consec INTEGER;
  v_recent BOOLEAN[];
  v_opened TIMESTAMPTZ;
  v_failed INTEGER;
  v_why TEXT;
  v_pause_ms BIGINT;
  v_pause_stage TEXT;
  v_until TIMESTAMPTZ;
  v_reason TEXT;
  v_wake BOOLEAN;
  v_woken TEXT[] := '{}';
BEGIN
  FOR v_name IN SELECT DISTINCT x.name FROM unnest(p_providers) AS x(name) ORDER BY 1 LOOP
    -- The common case changes nothing: successes (or neutral ends) of a
    -- provider whose breaker is closed with no failure counted and no rate
    -- window, with no stage waiting for a slot. Then the row is not locked:
    -- a lock here would be held through this transaction's synchronous
    -- commit and make every claim of the provider wait for it. (A stage
    -- that registers as waiting just after this read is woken by its own
    -- next poll.)
    SELECT * INTO p FROM spool_providers s WHERE s.name = v_name;
    CONTINUE WHEN NOT FOUND;
    CONTINUE WHEN spool_provider_quiet(p)
              AND NOT EXISTS (
                SELECT 1 FROM unnest(p_providers, p_kinds, p_classes, p_units)
                                AS x(provider, kind, class, units)
                 WHERE x.provider = v_name AND spool_outcome_tells(x.kind, x.class, x.units));
    SELECT * INTO p FROM spool_providers s WHERE s.name = v_name FOR UPDATE;
    v_now := clock_timestamp();
    v_state := p.breaker_state;
    v_consec := p.consecutive_failures;
    v_recent := p.recent_failed;
    v_opened := p.opened_at;
    v_pause_ms := NULL;
    -- Wake the stages waiting for a slot (they registered when a claim was
    -- held back by running calls) and, half-open, the stages of the probes.
    v_wake := cardinality(p.waiting_stages) > 0 OR p.breaker_state = 'half_open';
    FOR o IN SELECT x.stage, x.kind, x.class, x.delay_ms, x.units, x.claimed_at
               FROM unnest(p_providers, p_stages, p_kinds, p_classes, p_delays_ms, p_units,
                           p_claimed) WITH ORDINALITY
                    AS x(provider, stage, kind, class, delay_ms, units, claimed_at, ord)
              WHERE x.provider = v_name ORDER BY x.ord LOOP
      IF p.breaker_consecutive IS NOT NULL THEN
        IF o.kind = 'ok' THEN
          v_consec := 0;
          IF p.breaker_failure_rate > 0 THEN
            v_recent := v_recent || false;
          END IF;
          IF v_state = 'half_open' THEN
            v_state := 'closed';
            v_opened := NULL;
            v_recent := '{}';
            v_wake := true;
            INSERT INTO spool_provider_events (provider, kind, message)
            VALUES (v_name, 'breaker_closed',
                    format('a probe call of stage %s succeeded; calls flow again', o.stage));
          END IF;
        ELSIF o.kind IN ('retry', 'fail') AND o.class IN ('transient', 'network', 'timeout') THEN
          v_consec := v_consec + 1;
          v_recent := v_recent || true;
          v_recent := v_recent[greatest(1, cardinality(v_recent) - p.breaker_window + 1):];
          v_why := NULL;
          IF v_state = 'half_open' THEN
            v_why := format('a probe call of stage %s failed (%s)', o.stage, o.class);
          ELSIF v_state = 'closed' THEN
            v_failed := (SELECT count(*) FROM unnest(v_recent) AS f(failed) WHERE f.failed);
            IF v_consec >= p.breaker_consecutive THEN
              v_why := format('%s consecutive failed calls (the last: stage %s, %s)', v_consec,
                              o.stage, o.class);
            ELSIF p.breaker_failure_rate > 0 AND cardinality(v_recent) >= p.breaker_window
                  AND v_failed >= p.breaker_failure_rate * p.breaker_window - 1e-9 THEN
              v_why := format('%s of the last %s calls failed (failure_rate %s)', v_failed,
                              p.breaker_window, p.breaker_failure_rate);
            END IF;
          END IF;
          IF v_why IS NOT NULL THEN
            v_state := 'open';
            v_opened := v_now;
            INSERT INTO spool_provider_events (provider, kind, message)
            VALUES (v_name, 'breaker_opened',
                    format('%s; no calls for %s s', v_why, p.breaker_cooldown_s));
          END IF;
        END IF;
        v_recent := v_recent[greatest(1, cardinality(v_recent) - p.breaker_window + 1):];
      END IF;
      IF o.kind = 'snooze' AND o.class = 'rate_limited' AND o.delay_ms > 0
         AND o.delay_ms > coalesce(v_pause_ms, 0) THEN
        v_pause_ms := o.delay_ms;
        v_pause_stage := o.stage;
      END IF;
      IF o.kind = 'release' AND o.units > 0 THEN
        UPDATE spool_provider_usage u SET units = greatest(u.units - o.units, 0)
         WHERE u.provider = v_name
           AND u.window_start = (SELECT w.window_start
                                   FROM spool_quota_window(p.quota_window_s, p.quota_reset_at,
                                                           p.quota_time_zone, o.claimed_at) w);
      END IF;
      IF v_wake AND NOT (o.stage = ANY (v_woken)) THEN
        v_woken := v_woken || o.stage;
      END IF;
    END LOOP;

    v_until := p.paused_until;
    v_reason := p.pause_reason;
    IF v_pause_ms IS NOT NULL
       AND v_now + v_pause_ms * interval '1 millisecond' > coalesce(p.paused_until, '-infinity') THEN
      v_until := v_now + v_pause_ms * interval '1 millisecond';
      v_reason := format('rate limited: a call of stage %s was told to wait %s s', v_pause_stage,
                         round(v_pause_ms / 1000.0, 3));
      INSERT INTO spool_provider_events (provider, kind, message)
      VALUES (v_name, 'paused', format('paused until %s (%s)', spool_ts_text(v_until), v_reason));
    END IF;
    IF v_wake THEN
      SELECT array_agg(DISTINCT x.stage) INTO v_woken
        FROM unnest(v_woken || p.waiting_stages) AS x(stage);
    END IF;
    IF v_state IS DISTINCT FROM p.breaker_state OR v_consec IS DISTINCT FROM p.consecutive_failures
       OR v_recent IS DISTINCT FROM p.recent_failed OR v_until IS DISTINCT FROM p.paused_until
       OR (v_wake AND cardinality(p.waiting_stages) > 0) THEN
      UPDATE spool_providers s
         SET breaker_state = v_state, consecutive_failures = v_consec, recent_failed = v_recent,
             opened_at = v_opened, paused_until = v_until, pause_reason = v_reason,
             waiting_stages = CASE WHEN v_wake THEN '{}' ELSE s.waiting_stages END,
             updated_at = now()
       WHERE s.name = v_name;
    END IF;
  END LOOP;
  PERFORM pg_notify('spool_wakeup', x.stage)
     FROM (SELECT DISTINCT y.stage FROM unnest(v_woken) AS y(stage)) x;
END $$;
