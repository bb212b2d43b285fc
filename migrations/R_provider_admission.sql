-- Provider admission: what spool_claim (R_claim.sql) asks before it claims
-- runs of a stage that calls a provider, and what it writes once it has.
-- The caller holds the provider's row lock (FOR UPDATE) throughout, so the
-- admissions of one provider are serialized across every worker, and what one
-- admits is counted (running rows, tokens, usage) before the next one looks.
-- Times come from clock_timestamp() taken after that lock: a claim that waited
-- for it must not refill the bucket from a time before its predecessor's.

-- Functions with OUT parameters go first: CREATE OR REPLACE cannot change them.
DROP FUNCTION IF EXISTS spool_quota_window(FLOAT8, TIME, TEXT, TIMESTAMPTZ);
DROP FUNCTION IF EXISTS spool_provider_admit(TEXT, INTEGER, TIMESTAMPTZ, FLOAT8);
DROP FUNCTION IF EXISTS spool_provider_prefix(TEXT, BIGINT[], INTEGER, FLOAT8);
DROP FUNCTION IF EXISTS spool_provider_waiting(TEXT, TEXT);
DROP FUNCTION IF EXISTS spool_provider_charge(TEXT, TIMESTAMPTZ, INTEGER, FLOAT8, FLOAT8,
  TIMESTAMPTZ, TIMESTAMPTZ);
DROP FUNCTION IF EXISTS spool_provider_charge(TEXT, TIMESTAMPTZ, INTEGER, FLOAT8, FLOAT8,
  TIMESTAMPTZ, TIMESTAMPTZ, BIGINT);
DROP FUNCTION IF EXISTS spool_provider_charge(TEXT, TIMESTAMPTZ, INTEGER, FLOAT8, FLOAT8,
  TIMESTAMPTZ, TIMESTAMPTZ, BIGINT, FLOAT8);

-- A timestamp as operators read it in held-back reasons and events: UTC, to
-- the second (rounded up: "until" is never earlier than the instant).
CREATE OR REPLACE FUNCTION spool_ts_text(p_at TIMESTAMPTZ)
RETURNS TEXT LANGUAGE sql STABLE AS $$
  SELECT to_char(date_trunc('second', (p_at AT TIME ZONE 'UTC') + interval '999999 microseconds'),
                 'YYYY-MM-DD HH24:MI:SS') || '+00'
$$;

-- Milliseconds from p_from to p_to, rounded up, never negative.
CREATE OR REPLACE FUNCTION spool_ms_until(p_to TIMESTAMPTZ, p_from TIMESTAMPTZ)
RETURNS BIGINT LANGUAGE sql IMMUTABLE AS $$
  SELECT greatest(0, ceil(extract(epoch FROM p_to - p_from) * 1000))::bigint
$$;

-- The quota window holding p_at. A window of 86400 s is the local day that
-- starts at p_reset_at in p_tz (23 or 25 hours long across a DST change);
-- any other length starts at a multiple of it since the Unix epoch.
CREATE OR REPLACE FUNCTION spool_quota_window(p_window_s FLOAT8, p_reset_at TIME, p_tz TEXT,
                                              p_at TIMESTAMPTZ, OUT window_start TIMESTAMPTZ,
                                              OUT window_end TIMESTAMPTZ)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_local TIMESTAMP;
BEGIN
  IF p_window_s = 86400 THEN
    v_local := date_trunc('day', (p_at AT TIME ZONE p_tz) - p_reset_at::interval)
               + p_reset_at::interval;
    window_start := v_local AT TIME ZONE p_tz;
    window_end := (v_local + interval '1 day') AT TIME ZONE p_tz;
  ELSE
    window_start := to_timestamp(floor(extract(epoch FROM p_at) / p_window_s) * p_window_s);
    window_end := window_start + p_window_s * interval '1 second';
  END IF;
END $$;

-- Quota units one call uses: the payload's numeric p_field when it holds a
-- number in [0, 1e12], else p_per_call (no field configured, field absent,
-- not a number, out of range).
CREATE OR REPLACE FUNCTION spool_call_units(p_payload JSONB, p_field TEXT, p_per_call FLOAT8)
RETURNS FLOAT8 LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE
    WHEN p_field = '' OR jsonb_typeof(p_payload -> p_field) IS DISTINCT FROM 'number'
      THEN p_per_call
    WHEN (p_payload ->> p_field)::numeric BETWEEN 0 AND 1e12
      THEN (p_payload ->> p_field)::float8
    ELSE p_per_call END
$$;

-- How many calls provider p_name may start now (n, at most p_limit), and
-- why not more. Each configured limit gives a cap:
--   paused (until paused_until)                0
--   breaker open (cooldown not passed)         0
--   breaker half-open                          probes - running calls
--   max_concurrent > 0                         max_concurrent - running calls
--   rate                                       floor(tokens, refilled to p_now)
--   quota                                      0 when the window's units left are
--                                              below p_need (default: units_per_call
--                                              without units_field, else any left)
-- n is the least cap. An open breaker whose cooldown passed turns half-open
-- here (an event). Running calls are the provider's running stage runs.
-- reasons: the caps that hold n below p_limit, joined by '; '. When n = 0:
-- wait_ms is the longest of their waits (NULL when each waits for a running
-- call to end: that end NOTIFYs), and fallback_ok says whether one of them is
-- the breaker or the quota (a fallback provider may take the calls).
-- tokens (NULL without rate) and units_left/window_* (NULL without quota)
-- are what spool_provider_charge needs. quota_need: when the quota admits
-- nothing, the units it could not cover (else NULL). unit_each: with a
-- quota and no units_field, the units every call costs (else NULL). quota:
-- the window's units (NULL without quota).
-- running_base (with max_concurrent): the calls in flight, or an upper bound
-- on them, that spool_provider_charge adds the admitted calls to.
-- Calls of p_name in flight, counted up to p_at_most (NULL: all).
-- (PL/pgSQL: its plan is kept for the session, where a SQL function with a
-- subquery would be planned at every call.)
CREATE OR REPLACE FUNCTION spool_provider_running(p_name TEXT, p_at_most INTEGER)
RETURNS BIGINT LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN (SELECT count(*) FROM (SELECT 1 FROM stage_runs r
                                 WHERE r.provider = p_name AND r.state = 'running'
                                 LIMIT p_at_most) x);
END $$;

CREATE OR REPLACE FUNCTION spool_provider_admit(
  p_name TEXT, p_limit INTEGER, p_now TIMESTAMPTZ, p_need FLOAT8 DEFAULT NULL,
  OUT n INTEGER, OUT tokens FLOAT8, OUT units_left FLOAT8, OUT window_start TIMESTAMPTZ,
  OUT window_end TIMESTAMPTZ, OUT reasons TEXT, OUT wait_ms BIGINT, OUT fallback_ok BOOLEAN,
  OUT quota_need FLOAT8, OUT unit_each FLOAT8, OUT running_base BIGINT, OUT quota FLOAT8)
LANGUAGE plpgsql AS $$
DECLARE
  p RECORD;                 -- the provider's row and its counters
  v_running BIGINT;
  -- each limit's cap (NULL: not configured, or not holding now)
  c_pause BIGINT; c_breaker BIGINT; c_conc BIGINT; c_rate BIGINT; c_quota BIGINT;
  v_until TIMESTAMPTZ;
  v_used FLOAT8;
  v_need FLOAT8;
BEGIN
  -- With the usage of the quota window the last admission was in (the
  -- counters row remembers it): most claims fall in the same window.
  SELECT s.*, c.tokens, c.tokens_at, c.inflight_bound, c.window_start AS w_start,
         c.window_end AS w_end, u.units AS w_units INTO p
    FROM spool_providers s LEFT JOIN spool_provider_counters c ON c.provider = s.name
         LEFT JOIN spool_provider_usage u ON u.provider = s.name
                                         AND u.window_start = c.window_start
   WHERE s.name = p_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'provider "%" is not configured in this database', p_name
      USING HINT = 'store::sync_providers writes the configured providers (a worker does at start)';
  END IF;

  -- The caps first, as plain numbers: the common claim is held by none of
  -- them and needs no reasons.
  IF p.paused_until > p_now THEN
    c_pause := 0;
  END IF;
  IF p.breaker_consecutive IS NOT NULL THEN
    IF p.breaker_state = 'open' THEN
      v_until := p.opened_at + p.breaker_cooldown_s * interval '1 second';
      IF v_until > p_now THEN
        c_breaker := 0;
      ELSE
        UPDATE spool_providers s SET breaker_state = 'half_open', updated_at = now()
         WHERE s.name = p_name;
        INSERT INTO spool_provider_events (provider, kind, message)
        VALUES (p_name, 'breaker_half_open',
                format('cooldown of %s s passed; letting %s probe call(s) through',
                       p.breaker_cooldown_s, p.breaker_probes));
        p.breaker_state := 'half_open';
      END IF;
    END IF;
    IF p.breaker_state = 'half_open' THEN
      v_running := spool_provider_running(p_name, greatest(p.breaker_probes, p.max_concurrent));
      c_breaker := greatest(p.breaker_probes - v_running, 0);
    END IF;
  END IF;
  IF p.max_concurrent > 0 THEN
    -- Runs end without touching this row (an outcome must not queue behind
    -- claims), so inflight_bound only grows between counts: each charge adds
    -- its calls to it. While it leaves room for p_limit more, there is no
    -- need to count; near the cap, count (at most max_concurrent rows) and
    -- start the bound again from the count.
    IF v_running IS NULL AND p.inflight_bound IS NOT NULL
       AND p.inflight_bound + p_limit <= p.max_concurrent THEN
      running_base := p.inflight_bound;
      c_conc := p.max_concurrent - p.inflight_bound;
    ELSE
      IF v_running IS NULL THEN
        v_running := spool_provider_running(p_name, p.max_concurrent);
      END IF;
      running_base := v_running;
      c_conc := greatest(p.max_concurrent - v_running, 0);
    END IF;
  END IF;
  IF p.rate_per_s IS NOT NULL THEN
    tokens := least(p.rate_burst, coalesce(p.tokens + p.rate_per_s
                    * greatest(0, extract(epoch FROM p_now - p.tokens_at)), p.rate_burst));
    c_rate := floor(tokens)::bigint;
  END IF;
  IF p.quota_units IS NOT NULL THEN
    IF p_now >= p.w_start AND p_now < p.w_end THEN
      window_start := p.w_start;
      window_end := p.w_end;
      v_used := coalesce(p.w_units, 0);
    ELSE
      SELECT w.window_start, w.window_end INTO window_start, window_end
        FROM spool_quota_window(p.quota_window_s, p.quota_reset_at, p.quota_time_zone, p_now) w;
      v_used := coalesce((SELECT u.units FROM spool_provider_usage u
                           WHERE u.provider = p_name
                             AND u.window_start = spool_provider_admit.window_start), 0);
      UPDATE spool_provider_counters c
         SET window_start = spool_provider_admit.window_start,
             window_end = spool_provider_admit.window_end
       WHERE c.provider = p_name;
    END IF;
    quota := p.quota_units;
    units_left := p.quota_units - v_used;
    IF p.quota_units_field = '' THEN
      unit_each := p.quota_units_per_call;
    END IF;
    v_need := coalesce(p_need, CASE WHEN p.quota_units_field = '' THEN p.quota_units_per_call
                                    ELSE 0 END);
    -- (1e-9: units added up as floats must not miss an exact fit)
    IF units_left <= 1e-9 OR units_left + 1e-9 < v_need THEN
      c_quota := 0;
      quota_need := v_need;
    END IF;
  END IF;
  n := least(p_limit, c_pause, c_breaker, c_conc, c_rate, c_quota); -- least() skips NULLs
  fallback_ok := false;
  IF n >= p_limit THEN
    RETURN;
  END IF;

  -- Held below p_limit: every limit whose cap is n says why, in this order.
  IF v_running >= greatest(p.max_concurrent, p.breaker_probes) THEN
    v_running := spool_provider_running(p_name, NULL); -- the count stopped at the cap
  END IF;
  SELECT string_agg(x.why, '; ' ORDER BY x.ord),
         CASE WHEN n = 0 THEN max(x.wait) END,
         n = 0 AND bool_or(x.fb)
    INTO reasons, wait_ms, fallback_ok
    FROM (VALUES
      (1, c_pause, format('paused until %s (%s)', spool_ts_text(p.paused_until),
                          coalesce(p.pause_reason, 'no reason given')),
       spool_ms_until(p.paused_until, p_now), false),
      (2, c_breaker, CASE WHEN p.breaker_state = 'half_open'
                          THEN format('breaker half-open (%s of %s probe calls running)',
                                      v_running, p.breaker_probes)
                          ELSE format('breaker open until %s', spool_ts_text(v_until)) END,
       CASE WHEN p.breaker_state = 'half_open' THEN NULL
            ELSE spool_ms_until(v_until, p_now) END, true),
      (3, c_conc, format('max_concurrent %s (%s running)', p.max_concurrent, v_running),
       NULL::bigint, false),
      (4, c_rate, format('rate %s/s (burst %s)', p.rate_per_s, p.rate_burst),
       ceil((1 - tokens) / p.rate_per_s * 1000)::bigint, false),
      (5, c_quota, format('quota spent until %s (%s of %s units used%s)',
                          spool_ts_text(window_end), v_used, p.quota_units,
                          CASE WHEN v_need > 0 THEN format('; the next call needs %s', v_need)
                               ELSE '' END),
       spool_ms_until(window_end, p_now), true))
      AS x(ord, cap, why, wait, fb)
   WHERE x.cap = n;
END $$;

-- Counts for provider p_name the calls just admitted: takes p_calls tokens
-- (p_tokens: the bucket refilled to p_now; NULL without rate), adds them to
-- the bound on calls in flight (p_running_base: NULL without max_concurrent;
-- spool_sync_providers forgets the bound when the cap changes) and adds
-- p_units to the usage of the window starting at p_window_start (NULL
-- without quota; p_quota: the window's units, as admitted), with its 80%
-- and 100% events. Returns true (so that a caller may call it as an
-- expression).
CREATE OR REPLACE FUNCTION spool_provider_charge(p_name TEXT, p_now TIMESTAMPTZ,
                                                 p_calls INTEGER, p_tokens FLOAT8,
                                                 p_units FLOAT8, p_window_start TIMESTAMPTZ,
                                                 p_window_end TIMESTAMPTZ,
                                                 p_running_base BIGINT, p_quota FLOAT8)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
  v_used FLOAT8;
  v_warned BOOLEAN;
  v_exhausted BOOLEAN;
BEGIN
  IF p_tokens IS NOT NULL OR p_running_base IS NOT NULL THEN
    UPDATE spool_provider_counters c
       SET tokens = CASE WHEN p_tokens IS NULL THEN c.tokens ELSE p_tokens - p_calls END,
           tokens_at = CASE WHEN p_tokens IS NULL THEN c.tokens_at ELSE p_now END,
           inflight_bound = p_running_base + p_calls
     WHERE c.provider = p_name;
    IF NOT FOUND THEN -- (spool_sync_providers writes the row with the provider's)
      INSERT INTO spool_provider_counters (provider, tokens, tokens_at, inflight_bound)
      VALUES (p_name, coalesce(p_tokens - p_calls, 0), p_now, p_running_base + p_calls)
      ON CONFLICT (provider) DO NOTHING;
    END IF;
  END IF;
  IF p_window_start IS NOT NULL THEN
    -- The window's row exists but for the first claim of the window (an
    -- update is cheaper than an insert that conflicts). The provider's row
    -- lock, held by the caller, keeps two first claims from racing here.
    UPDATE spool_provider_usage u SET units = u.units + p_units
     WHERE u.provider = p_name AND u.window_start = p_window_start
    RETURNING u.units, u.warned_80, u.exhausted_logged INTO v_used, v_warned, v_exhausted;
    IF NOT FOUND THEN
      INSERT INTO spool_provider_usage AS u (provider, window_start, units)
      VALUES (p_name, p_window_start, p_units)
      ON CONFLICT (provider, window_start) DO UPDATE SET units = u.units + EXCLUDED.units
      RETURNING u.units, u.warned_80, u.exhausted_logged INTO v_used, v_warned, v_exhausted;
    END IF;
    -- The events only when this charge may have crossed 80 % or 100 %.
    IF (NOT v_warned AND v_used >= 0.8 * p_quota - 1e-9)
       OR (NOT v_exhausted AND v_used >= p_quota - 1e-9) THEN
      PERFORM spool_provider_quota_events(p_name, p_window_start, p_window_end, NULL);
    END IF;
  END IF;
  RETURN true;
END $$;

-- The quota events of a window, each at most once: quota_warning once 80% of
-- the units are used, quota_exhausted once all are, or once a claim was held
-- back because the next call needs more units than are left (p_need: its
-- units; NULL when no claim was held back).
CREATE OR REPLACE FUNCTION spool_provider_quota_events(p_name TEXT, p_window_start TIMESTAMPTZ,
                                                       p_window_end TIMESTAMPTZ,
                                                       p_need FLOAT8)
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
  v_quota FLOAT8;
  u spool_provider_usage;
BEGIN
  v_quota := (SELECT s.quota_units FROM spool_providers s WHERE s.name = p_name);
  IF v_quota IS NULL THEN
    RETURN;
  END IF;
  IF p_need IS NOT NULL THEN
    INSERT INTO spool_provider_usage (provider, window_start) VALUES (p_name, p_window_start)
    ON CONFLICT DO NOTHING;
  END IF;
  SELECT * INTO u FROM spool_provider_usage x
   WHERE x.provider = p_name AND x.window_start = p_window_start FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  IF NOT u.warned_80 AND u.units >= 0.8 * v_quota - 1e-9 THEN
    INSERT INTO spool_provider_events (provider, kind, message)
    VALUES (p_name, 'quota_warning',
            format('%s of %s quota units used (%s%%) in the window ending %s',
                   u.units, v_quota, round((100 * u.units / v_quota)::numeric, 1),
                   spool_ts_text(p_window_end)));
    UPDATE spool_provider_usage x SET warned_80 = true
     WHERE x.provider = p_name AND x.window_start = p_window_start;
  END IF;
  IF NOT u.exhausted_logged
     AND (u.units >= v_quota - 1e-9 OR u.units + p_need > v_quota + 1e-9) THEN
    INSERT INTO spool_provider_events (provider, kind, message)
    VALUES (p_name, 'quota_exhausted',
            format('quota spent: %s of %s units used%s; no calls until the window resets at %s',
                   u.units, v_quota,
                   CASE WHEN u.units < v_quota - 1e-9
                        THEN format(' (the next call needs %s)', p_need) ELSE '' END,
                   spool_ts_text(p_window_end)));
    UPDATE spool_provider_usage x SET exhausted_logged = true
     WHERE x.provider = p_name AND x.window_start = p_window_start;
  END IF;
END $$;

-- The calls provider p_name admits among the candidates p_ids (ready runs
-- this claim holds, taken in fair order): at most p_n, and the prefix whose
-- units add up to at most p_units_left (NULL: no quota). ids in fair order;
-- units: run id -> its units (NULL without quota); total: their sum;
-- next_units: the units of the first candidate left out (NULL: none, or no
-- quota).
CREATE OR REPLACE FUNCTION spool_provider_prefix(p_name TEXT, p_ids BIGINT[], p_n INTEGER,
                                                 p_units_left FLOAT8, OUT ids BIGINT[],
                                                 OUT units JSONB, OUT total FLOAT8,
                                                 OUT next_units FLOAT8)
LANGUAGE plpgsql AS $$
DECLARE
  p spool_providers;
BEGIN
  SELECT * INTO p FROM spool_providers s WHERE s.name = p_name;
  IF p_units_left IS NULL OR p.quota_units IS NULL THEN
    SELECT array_agg(c.id ORDER BY c.priority, c.fair_round, c.fair_seq) INTO ids
      FROM (SELECT r.id, r.priority, r.fair_round, r.fair_seq FROM stage_runs r
             WHERE r.id = ANY (p_ids)
             ORDER BY r.priority, r.fair_round, r.fair_seq LIMIT p_n) c;
    total := 0;
    RETURN;
  END IF;
  WITH c AS (
    SELECT r.id, spool_call_units(t.payload, p.quota_units_field, p.quota_units_per_call) AS u,
           row_number() OVER w AS k,
           sum(spool_call_units(t.payload, p.quota_units_field, p.quota_units_per_call))
             OVER w AS cum
      FROM stage_runs r JOIN tasks t ON t.id = r.task_id
     WHERE r.id = ANY (p_ids)
    WINDOW w AS (ORDER BY r.priority, r.fair_round, r.fair_seq
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
  )
  SELECT array_agg(c.id ORDER BY c.k) FILTER (WHERE c.k <= p_n AND c.cum <= p_units_left + 1e-9),
         jsonb_object_agg(c.id::text, c.u) FILTER (WHERE c.k <= p_n AND c.cum <= p_units_left + 1e-9),
         coalesce(sum(c.u) FILTER (WHERE c.k <= p_n AND c.cum <= p_units_left + 1e-9), 0),
         (array_agg(c.u ORDER BY c.k)
            FILTER (WHERE NOT (c.k <= p_n AND c.cum <= p_units_left + 1e-9)))[1]
    INTO ids, units, total, next_units
    FROM c;
END $$;

-- Why p_name admits no more for p_stage now that a claim held back by it is
-- counted (the admission of one more call, p_need: the units of the first
-- run left out), and for how long (wait_ms; NULL: until a running call
-- ends). Logs the quota's exhaustion when the quota is what held it, and,
-- when only running calls hold it, notes that p_stage waits for one to end:
-- the end of such a call NOTIFYs spool_wakeup for it (spool_provider_outcomes),
-- whichever stage's call it was.
CREATE OR REPLACE FUNCTION spool_provider_hold(p_name TEXT, p_stage TEXT, p_now TIMESTAMPTZ,
                                               p_need FLOAT8, OUT reasons TEXT,
                                               OUT wait_ms BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
  h RECORD;
BEGIN
  h := spool_provider_admit(p_name, 1, p_now, p_need);
  reasons := coalesce(h.reasons, 'provider limits');
  wait_ms := h.wait_ms;
  IF h.quota_need IS NOT NULL THEN
    PERFORM spool_provider_quota_events(p_name, h.window_start, h.window_end, h.quota_need);
  END IF;
  IF h.n = 0 AND h.wait_ms IS NULL THEN
    UPDATE spool_providers s SET waiting_stages = s.waiting_stages || p_stage
     WHERE s.name = p_name AND NOT (p_stage = ANY (s.waiting_stages));
  END IF;
END $$;
