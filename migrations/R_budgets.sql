-- Daily budgets: the limits workers write (spool_sync_budgets), the
-- reservation a claim makes of the hard budget (spool_budget_admit, called by
-- spool_claim), and what an outcome or a cancel gives back and spends
-- (spool_budget_outcomes, called by spool_record_outcomes and spool_cancel).
--
-- A claim of paid runs (stage_runs.est_cost > 0) locks the 'total' budget
-- row, so the reservations of every worker are serialized, and reserves each
-- run's estimate on that row's counter for the budget day; a run whose estimate
-- would take spend plus reservations past a hard budget (the cluster's, or
-- its client's) is not claimed. The outcome turns the reservation into the
-- actual cost reported (or nothing), on the day the cost is reported. So no
-- number of concurrent claims can overshoot a hard budget; only actual costs
-- above their estimates can.
--
-- Claims write the budget rows and outcomes spool_spend (see
-- 0009_cost_budgets.up.sql), so neither waits for the other's commit. Locks,
-- in this order: the 'total' budget row, client budget rows (scope order),
-- then spend rows ((day, scope) order). Claims take provider
-- rows before these, and so do outcomes (spool_provider_outcomes runs
-- first).

DROP FUNCTION IF EXISTS spool_budget_day(TIMESTAMPTZ);
DROP FUNCTION IF EXISTS spool_budget_admit(BIGINT[], NUMERIC[], TEXT);
DROP FUNCTION IF EXISTS spool_cost_report(DATE, TEXT);

-- The budget day holding p_at under the 'total' row's time zone, reset time
-- and length: its start (which stands for the day in spool_spend) and end.
CREATE FUNCTION spool_budget_day(p_at TIMESTAMPTZ, OUT day_start TIMESTAMPTZ,
                                 OUT day_end TIMESTAMPTZ)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  b RECORD;
BEGIN
  SELECT s.time_zone, s.reset_at, s.day_s, s.day_start AS c_start, s.day_end AS c_end
    INTO b FROM spool_budgets s WHERE s.scope = 'total';
  IF p_at >= b.c_start AND p_at < b.c_end THEN
    day_start := b.c_start; day_end := b.c_end;
    RETURN;
  END IF;
  SELECT w.window_start, w.window_end INTO day_start, day_end
    FROM spool_quota_window(coalesce(b.day_s, 86400), coalesce(b.reset_at, '00:00'),
                            coalesce(b.time_zone, 'UTC'), p_at) w;
END $$;

-- Writes the budgets of a worker's configuration. p: the configuration's
-- "budgets" object, defaults filled in: {"soft_usd": 100, "hard_usd": 150,
-- "reset_at": "00:00", "time_zone": "UTC", "day_s": 86400, "overrun_factor": 1.2,
-- "client_soft_usd": {"acme": 20}, "client_hard_usd": {"acme": 30}}; 0
-- means none. Client rows not listed are deleted (their spend stays).
-- Stages waiting for the budget are woken: a raised budget may admit them.
-- Refuses an unknown time zone or a bad reset_at.
CREATE OR REPLACE FUNCTION spool_sync_budgets(p JSONB)
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
  v_tz TEXT := coalesce(p ->> 'time_zone', 'UTC');
  v_reset TIME;
  v_waiting TEXT[];
BEGIN
  IF jsonb_typeof(p) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION 'budgets: expected a JSON object, got %', coalesce(jsonb_typeof(p), 'NULL');
  END IF;
  BEGIN
    v_reset := coalesce(p ->> 'reset_at', '00:00')::time;
    PERFORM now() AT TIME ZONE v_tz;
  EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION 'budgets: %', SQLERRM;
  END;
  INSERT INTO spool_budgets AS b (scope, soft_usd, hard_usd, time_zone, reset_at, day_s,
                                  overrun_factor, client_hard, updated_at)
  VALUES ('total', nullif((p ->> 'soft_usd')::numeric, 0), nullif((p ->> 'hard_usd')::numeric, 0),
          v_tz, v_reset, coalesce((p ->> 'day_s')::float8, 86400),
          coalesce((p ->> 'overrun_factor')::float8, 1.2),
          EXISTS (SELECT 1 FROM jsonb_each_text(coalesce(p -> 'client_hard_usd', '{}')) x
                   WHERE x.value::numeric > 0),
          now())
  ON CONFLICT (scope) DO UPDATE SET
    soft_usd = EXCLUDED.soft_usd, hard_usd = EXCLUDED.hard_usd,
    time_zone = EXCLUDED.time_zone, reset_at = EXCLUDED.reset_at, day_s = EXCLUDED.day_s,
    overrun_factor = EXCLUDED.overrun_factor, client_hard = EXCLUDED.client_hard,
    day_start = NULL, day_end = NULL, -- the day is worked out again under the new settings
    waiting_stages = '{}', updated_at = now()
  -- (the subquery sees the row as it was before this statement)
  RETURNING (SELECT o.waiting_stages FROM spool_budgets o WHERE o.scope = 'total') INTO v_waiting;
  WITH c AS (
    SELECT coalesce(s.key, h.key) AS client, nullif(s.value::numeric, 0) AS soft,
           nullif(h.value::numeric, 0) AS hard
      FROM jsonb_each_text(coalesce(p -> 'client_soft_usd', '{}')) s
      FULL JOIN jsonb_each_text(coalesce(p -> 'client_hard_usd', '{}')) h ON h.key = s.key
  ), kept AS (
    INSERT INTO spool_budgets AS b (scope, soft_usd, hard_usd, updated_at)
    SELECT 'client:' || c.client, c.soft, c.hard, now() FROM c
     WHERE c.soft IS NOT NULL OR c.hard IS NOT NULL
     ORDER BY 1
    ON CONFLICT (scope) DO UPDATE SET soft_usd = EXCLUDED.soft_usd, hard_usd = EXCLUDED.hard_usd,
                                      updated_at = now()
    RETURNING b.scope
  )
  DELETE FROM spool_budgets b
   WHERE b.scope LIKE 'client:%' AND b.scope NOT IN (SELECT k.scope FROM kept k);
  PERFORM pg_notify('spool_wakeup', x.stage) FROM unnest(v_waiting) AS x(stage);
  DELETE FROM spool_spend s WHERE s.day < now() - interval '400 days';
END $$;

-- The candidates p_ids (in fair order, p_costs their estimates) that the
-- hard budgets admit now for a claim of stage p_stage: every free run, and
-- each paid run whose estimate fits what is left of the day's hard budget
-- (the cluster's, and its client's when the client has one), reserved in
-- the budget rows as it is admitted. A paid run that does not fit is left out
-- and the next is tried. day: the budget day reserved on; clients: the
-- admitted runs also reserved on their client's row. held: why paid runs
-- were left out (NULL: none were), wait_ms: until the day ends; the stage
-- is noted as waiting, so that reservations coming back wake it, and the
-- day's budget_exhausted event fires once per scope.
CREATE FUNCTION spool_budget_admit(p_ids BIGINT[], p_costs NUMERIC[], p_stage TEXT,
                                   OUT ids BIGINT[], OUT day TIMESTAMPTZ, OUT clients BIGINT[],
                                   OUT held TEXT, OUT wait_ms BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
  b RECORD;                 -- the 'total' row, locked
  v_now TIMESTAMPTZ;
  v_end TIMESTAMPTZ;
  v_spent NUMERIC := 0;     -- the day's total spend
  v_released NUMERIC;       -- and what outcomes gave back of its reservations
  v_res NUMERIC;            -- reserved on the 'total' row for the day
  c_res JSONB := '{}';      -- client -> reserved on its row for the day
  v_used NUMERIC := 0;      -- spend and reservations, the total's
  v_add NUMERIC := 0;       -- reserved by this claim
  v_client TEXT[];          -- each candidate's client, with a hard budget ('' none)
  c_hard JSONB := '{}';     -- client -> hard budget
  c_used JSONB := '{}';     -- client -> spent + reserved today, this claim's included
  c_add JSONB := '{}';      -- client -> reserved by this claim
  v_out BOOLEAN := false;   -- the total held a run back
  c_out TEXT[] := '{}';     -- clients that held a run back
  v_c TEXT;
  v_cost NUMERIC;
BEGIN
  SELECT s.hard_usd, s.client_hard, s.day_start, s.day_end, s.reserved, s.reserved_day
    INTO b FROM spool_budgets s WHERE s.scope = 'total' FOR UPDATE;
  IF NOT FOUND OR (b.hard_usd IS NULL AND NOT b.client_hard) THEN
    ids := p_ids; -- no hard budget: nothing to reserve
    RETURN;
  END IF;
  v_now := clock_timestamp(); -- after the lock
  IF v_now >= b.day_start AND v_now < b.day_end THEN
    day := b.day_start; v_end := b.day_end;
  ELSE
    SELECT d.day_start, d.day_end INTO day, v_end FROM spool_budget_day(v_now) d;
  END IF;
  v_res := CASE WHEN b.reserved_day = day THEN b.reserved ELSE 0 END;
  -- (Spend rows are read as committed: an outcome not visible yet still
  -- counts as reserved.)
  SELECT s.spent, s.released INTO v_spent, v_released
    FROM spool_spend s WHERE s.day = spool_budget_admit.day AND s.scope = 'total';
  v_spent := coalesce(v_spent, 0);
  v_used := v_spent + greatest(v_res - coalesce(v_released, 0), 0);
  IF b.client_hard THEN
    SELECT array_agg(coalesce(cb.scope, '') ORDER BY o.k) INTO v_client
      FROM unnest(p_ids) WITH ORDINALITY AS o(id, k)
      JOIN stage_runs r ON r.id = o.id JOIN tasks t ON t.id = r.task_id
      LEFT JOIN spool_budgets cb ON cb.scope = 'client:' || t.client_id
                                AND cb.hard_usd IS NOT NULL;
    SELECT coalesce(jsonb_object_agg(cb.scope, cb.hard_usd), '{}'),
           coalesce(jsonb_object_agg(cb.scope, CASE WHEN cb.reserved_day = spool_budget_admit.day
                                                    THEN cb.reserved ELSE 0 END), '{}')
      INTO c_hard, c_res
      FROM (SELECT x.scope, x.hard_usd, x.reserved, x.reserved_day FROM spool_budgets x
             WHERE x.scope IN (SELECT unnest(v_client)) ORDER BY x.scope FOR UPDATE) cb;
    SELECT coalesce(jsonb_object_agg(k.key, coalesce(s.spent, 0)
                                            + greatest(k.value::numeric - coalesce(s.released, 0),
                                                       0)), '{}')
      INTO c_used
      FROM jsonb_each_text(c_res) k
      LEFT JOIN spool_spend s ON s.day = spool_budget_admit.day AND s.scope = k.key;
  END IF;

  -- Most claims fit whole: no client budgets, and the day's hard budget
  -- has room for every estimate.
  IF NOT b.client_hard THEN
    v_add := (SELECT coalesce(sum(c), 0) FROM unnest(p_costs) AS c WHERE c > 0);
    IF v_used + v_add <= b.hard_usd THEN
      ids := p_ids;
    ELSE
      v_add := 0;
    END IF;
  END IF;
  FOR i IN 1 .. CASE WHEN ids IS NULL THEN coalesce(cardinality(p_ids), 0) ELSE 0 END LOOP
    v_cost := p_costs[i];
    IF v_cost <= 0 THEN
      ids := ids || p_ids[i];
      CONTINUE;
    END IF;
    v_c := CASE WHEN b.client_hard THEN nullif(v_client[i], '') END;
    IF b.hard_usd IS NOT NULL AND v_used + v_add + v_cost > b.hard_usd THEN
      v_out := true;
      CONTINUE;
    END IF;
    IF v_c IS NOT NULL AND coalesce((c_used ->> v_c)::numeric, 0) + v_cost
                           > (c_hard ->> v_c)::numeric THEN
      IF NOT v_c = ANY (c_out) THEN
        c_out := c_out || v_c;
      END IF;
      CONTINUE;
    END IF;
    ids := ids || p_ids[i];
    v_add := v_add + v_cost;
    IF v_c IS NOT NULL THEN
      clients := clients || p_ids[i];
      c_used := jsonb_set(c_used, ARRAY[v_c], to_jsonb(coalesce((c_used ->> v_c)::numeric, 0)
                                                        + v_cost));
      c_add := jsonb_set(c_add, ARRAY[v_c], to_jsonb(coalesce((c_add ->> v_c)::numeric, 0)
                                                      + v_cost));
    END IF;
  END LOOP;

  -- The counters (and the day, when it is new) on the rows this claim holds.
  IF v_add > 0 OR b.day_start IS DISTINCT FROM day THEN
    UPDATE spool_budgets s SET reserved = v_res + v_add, reserved_day = spool_budget_admit.day,
                               day_start = spool_budget_admit.day, day_end = v_end
     WHERE s.scope = 'total';
  END IF;
  IF c_add <> '{}' THEN
    UPDATE spool_budgets s
       SET reserved = (c_res ->> s.scope)::numeric + (c_add ->> s.scope)::numeric,
           reserved_day = spool_budget_admit.day
     WHERE s.scope IN (SELECT jsonb_object_keys(c_add));
  END IF;

  IF v_out OR cardinality(c_out) > 0 THEN
    held := concat_ws('; ',
      CASE WHEN v_out THEN format('hard budget %s USD a day reached (%s spent, %s reserved)',
                                  trim_scale(b.hard_usd), trim_scale(v_spent),
                                  trim_scale(v_used + v_add - v_spent)) END,
      CASE WHEN cardinality(c_out) > 0
           THEN format('hard budget of %s reached', array_to_string(c_out, ', ')) END);
    wait_ms := spool_ms_until(v_end, v_now);
    UPDATE spool_budgets s SET waiting_stages = s.waiting_stages || p_stage
     WHERE s.scope = 'total' AND NOT (p_stage = ANY (s.waiting_stages));
    -- Once a day per scope: the budget_exhausted event.
    WITH marked AS (
      UPDATE spool_budgets s SET hard_logged_day = spool_budget_admit.day
       WHERE (s.scope = 'total' AND v_out OR s.scope = ANY (c_out))
         AND s.hard_logged_day IS DISTINCT FROM spool_budget_admit.day
      RETURNING s.scope
    )
    INSERT INTO spool_provider_events (provider, kind, message)
    SELECT k.scope, 'budget_exhausted',
           format('hard budget reached for the day starting %s: %s USD spent, %s reserved; '
                  'paid work waits until %s or a raised budget',
                  spool_ts_text(spool_budget_admit.day), trim_scale(coalesce(m.spent, 0)),
                  trim_scale(coalesce(m.reserved, 0)), spool_ts_text(v_end))
      FROM marked k LEFT JOIN spool_money m ON m.day = spool_budget_admit.day
                                           AND m.scope = k.scope;
  END IF;
END $$;

-- What outcomes (or a cancel) mean for the budgets. Per run: p_costs (actual
-- USD reported by its outcome) are spent on today's budget day under
-- 'total', the run's stage (p_stages) and provider (p_providers); p_reserved
-- (what its claim reserved, NULL: nothing) goes back on p_days (the day it
-- was reserved on), also on its task's (p_tasks) client's row where
-- p_clients says so. Per task with a cost (the caller has the task rows at
-- hand): p_t_costs are spent under its client (p_t_clients) and campaign
-- (p_t_campaigns).
-- Fires the day's budget_warning once per scope whose spend reaches its soft
-- budget, and wakes the stages waiting for reservations to come back.
DROP FUNCTION IF EXISTS spool_budget_outcomes(BIGINT[], NUMERIC[], NUMERIC[], TIMESTAMPTZ[],
                                              BOOLEAN[]);
CREATE OR REPLACE FUNCTION spool_budget_outcomes(p_costs NUMERIC[], p_reserved NUMERIC[],
                                                 p_days TIMESTAMPTZ[], p_clients BOOLEAN[],
                                                 p_stages TEXT[], p_providers TEXT[],
                                                 p_tasks BIGINT[], p_t_clients TEXT[],
                                                 p_t_campaigns TEXT[], p_t_costs NUMERIC[])
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
  v_today TIMESTAMPTZ;
  v_waiting TEXT[];
  v_days TIMESTAMPTZ[];
  v_scopes TEXT[];
BEGIN
  -- Waiting stages first: the 'total' row is locked before spend rows, as
  -- claims lock them.
  IF EXISTS (SELECT 1 FROM spool_budgets s
              WHERE s.scope = 'total' AND s.waiting_stages <> '{}') THEN
    WITH w AS (SELECT s.waiting_stages FROM spool_budgets s WHERE s.scope = 'total' FOR UPDATE)
    UPDATE spool_budgets s SET waiting_stages = '{}' FROM w
     WHERE s.scope = 'total' RETURNING w.waiting_stages INTO v_waiting;
  END IF;
  v_today := (SELECT d.day_start FROM spool_budget_day(now()) d);
  WITH x AS (
    SELECT o.cost, o.reserved, o.rday, o.rclient, o.stage, o.provider,
           CASE WHEN o.rclient THEN (SELECT t.client_id FROM tasks t WHERE t.id = o.task)
           END AS client_id
      FROM unnest(p_costs, p_reserved, p_days, p_clients, p_stages, p_providers, p_tasks)
           AS o(cost, reserved, rday, rclient, stage, provider, task)
  ), tx AS (
    SELECT * FROM unnest(p_t_clients, p_t_campaigns, p_t_costs) AS o(client_id, campaign_id, cost)
     WHERE o.cost > 0
  ), deltas AS (
    SELECT v_today AS day, 'total' AS scope, x.cost AS spent, 0::numeric AS released
      FROM x WHERE x.cost > 0
    UNION ALL
    SELECT v_today, 'client:' || tx.client_id, tx.cost, 0 FROM tx WHERE tx.client_id <> ''
    UNION ALL
    SELECT v_today, 'campaign:' || tx.campaign_id, tx.cost, 0 FROM tx WHERE tx.campaign_id <> ''
    UNION ALL
    SELECT v_today, 'provider:' || x.provider, x.cost, 0 FROM x
     WHERE x.cost > 0 AND x.provider IS NOT NULL
    UNION ALL
    SELECT v_today, 'stage:' || x.stage, x.cost, 0 FROM x WHERE x.cost > 0
    UNION ALL
    SELECT x.rday, 'total', 0, x.reserved FROM x WHERE x.reserved IS NOT NULL
    UNION ALL
    SELECT x.rday, 'client:' || x.client_id, 0, x.reserved FROM x
     WHERE x.reserved IS NOT NULL AND x.rclient
  ), applied AS (
    INSERT INTO spool_spend AS s (day, scope, spent, released)
    SELECT d.day, d.scope, sum(d.spent), sum(d.released) FROM deltas d
     GROUP BY d.day, d.scope ORDER BY d.day, d.scope
    ON CONFLICT ON CONSTRAINT spool_spend_pkey DO UPDATE
      SET spent = s.spent + EXCLUDED.spent, released = s.released + EXCLUDED.released
    RETURNING s.day, s.scope, s.spent, s.soft_warned
  )
  -- Scopes whose spend just reached their soft budget (the row is marked in
  -- a statement of its own: one statement cannot update a row twice).
  SELECT array_agg(a.day), array_agg(a.scope) INTO v_days, v_scopes
    FROM applied a JOIN spool_budgets b ON b.scope = a.scope AND b.soft_usd IS NOT NULL
   WHERE NOT a.soft_warned AND a.spent >= b.soft_usd;
  IF v_scopes IS NULL THEN
    PERFORM pg_notify('spool_wakeup', x.stage) FROM unnest(v_waiting) AS x(stage);
    RETURN;
  END IF;
  WITH warned AS (
    UPDATE spool_spend s SET soft_warned = true
      FROM unnest(v_days, v_scopes) AS w(day, scope), spool_budgets b
     WHERE s.day = w.day AND s.scope = w.scope AND b.scope = w.scope AND NOT s.soft_warned
    RETURNING s.day, s.scope, s.spent, b.soft_usd
  )
  INSERT INTO spool_provider_events (provider, kind, message)
  SELECT w.scope, 'budget_warning',
         format('%s USD spent on the day starting %s: past the soft budget of %s USD',
                trim_scale(w.spent), spool_ts_text(w.day), trim_scale(w.soft_usd))
    FROM warned w;
  PERFORM pg_notify('spool_wakeup', x.stage) FROM unnest(v_waiting) AS x(stage);
END $$;

-- The daily spend report of the budget day that starts on date p_day (NULL:
-- today's) by p_by: '' (the whole cluster), 'client', 'campaign', 'provider'
-- or 'stage'. One row per key: spent and reserved that day (spool_spend;
-- with budget days shorter than a day, every one that starts in the day),
-- and for the tasks enqueued that day (runs of them, by provider or stage)
-- how many, their estimates and their actual costs. Keys in order; ''
-- stands for "none".
CREATE FUNCTION spool_cost_report(p_day DATE, p_by TEXT)
RETURNS TABLE (day DATE, key TEXT, spent NUMERIC, reserved NUMERIC, tasks BIGINT,
               estimated NUMERIC, actual NUMERIC)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_day DATE := p_day;
  v_tz TEXT;
  v_reset TIME;
  v_start TIMESTAMPTZ;
  v_end TIMESTAMPTZ;
BEGIN
  IF p_by NOT IN ('', 'client', 'campaign', 'provider', 'stage') THEN
    RAISE EXCEPTION 'by: must be client, campaign, provider or stage, got "%"', p_by;
  END IF;
  SELECT b.time_zone, b.reset_at INTO v_tz, v_reset FROM spool_budgets b WHERE b.scope = 'total';
  v_tz := coalesce(v_tz, 'UTC');
  v_reset := coalesce(v_reset, '00:00');
  IF v_day IS NULL THEN
    v_day := ((SELECT d.day_start FROM spool_budget_day(now()) d) AT TIME ZONE v_tz)::date;
  END IF;
  v_start := (v_day + v_reset) AT TIME ZONE v_tz;
  v_end := (v_day + 1 + v_reset) AT TIME ZONE v_tz;
  RETURN QUERY
  WITH spend AS (
    SELECT CASE WHEN p_by = '' THEN '' ELSE substr(s.scope, length(p_by) + 2) END AS k,
           sum(s.spent) AS spent, sum(s.reserved) AS reserved
      FROM spool_money s
     WHERE s.day >= v_start AND s.day < v_end
       AND (CASE WHEN p_by = '' THEN s.scope = 'total' ELSE s.scope LIKE p_by || ':%' END)
     GROUP BY 1
  ), work AS (
    SELECT CASE p_by WHEN 'client' THEN t.client_id WHEN 'campaign' THEN t.campaign_id
                     ELSE '' END AS k,
           count(*) AS n, sum(t.estimated_cost) AS est, sum(t.actual_cost) AS act
      FROM tasks t
     WHERE p_by IN ('', 'client', 'campaign') AND t.created_at >= v_start AND t.created_at < v_end
     GROUP BY 1
    UNION ALL
    SELECT CASE p_by WHEN 'stage' THEN r.stage ELSE coalesce(r.provider, '') END,
           count(DISTINCT r.task_id), sum(r.est_cost), sum(r.cost)
      FROM tasks t JOIN stage_runs r ON r.task_id = t.id
     WHERE p_by IN ('provider', 'stage') AND t.created_at >= v_start AND t.created_at < v_end
     GROUP BY 1
  )
  SELECT v_day, coalesce(s.k, w.k), coalesce(s.spent, 0), coalesce(s.reserved, 0),
         coalesce(w.n, 0), coalesce(w.est, 0), coalesce(w.act, 0)
    FROM spend s FULL JOIN work w ON w.k = s.k
   ORDER BY 2;
END $$;
