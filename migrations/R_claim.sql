-- Claims up to p_limit ready runs of a stage for p_worker, in fair order,
-- with a lease of p_lease_ms and the lease token p_token (a number the
-- claiming worker process never hands out twice). Each claim counts a new
-- attempt number and opens its stage_attempts row; (worker, attempt, token)
-- fences every outcome. The task row is left alone (claims stay cheap): a
-- task turns running with its first outcome.
--
-- The first statement picks and locks the runs: per priority, in order, an
-- ordered walk of stage_runs_claim_idx from the remembered head (see
-- R_fair_order.sql) that stops once p_limit runs are found. The second works on
-- exactly those ids. Every plan is right whatever p_limit and the table
-- statistics are, so each is planned once per session (plan_cache_mode) and
-- never as a table scan (enable_seqscan: statistics taken while a table was
-- nearly empty must not turn a lookup into a scan of what it has grown to).
-- The run's max_retries comes back with it: the retry limit is fixed when the
-- task is enqueued, so a worker decides a failed attempt with the run's copy.
-- So does the task's context (brand guidelines and campaign brief, NULL
-- when it has none), for the stage's input.
--
-- Providers. With p_provider (the stage's provider; NULL: none, and the
-- claim is the plain one above) the claim admits only what the provider's
-- limits allow now (spool_provider_admit, R_provider_admission.sql): it locks
-- the provider rows (p_provider and p_fallback, in name order: two stages
-- that fall back on each other's provider cannot deadlock), walks at most
-- one run more than the admission allows (to learn whether runs remain),
-- keeps the prefix whose quota units fit, and charges tokens and units. When
-- the primary admits nothing because its breaker is open or half-open, or its
-- quota is spent (also: too small for the next run), the same admission is
-- made under p_fallback. Claimed runs carry the provider that admitted them
-- (stage_runs.provider, units_charged; stage_attempts.provider). When the
-- limits held the claim below p_limit while ready runs remained, one more row
-- comes last, with run_id NULL: provider (the one the claim was made under),
-- held_back (why: each limit that admits nothing more now, e.g. "rate 2/s
-- (burst 4)", "max_concurrent 3 (3 running)", "quota spent until
-- 2026-12-03 08:00:00+00 (...)", "paused until ... (...)", "breaker open
-- until ..."; with a fallback tried, "<primary's>; fallback <name>: <its>")
-- and wait_ms (how long until it may admit again: the longest wait among those
-- limits, the next token, the end of a pause, a cooldown or a quota window;
-- NULL when they wait only for running calls to end, whose outcomes NOTIFY
-- spool_wakeup; with a fallback, the sooner of the two).
DROP FUNCTION IF EXISTS spool_claim(TEXT, INTEGER, TEXT, BIGINT, BIGINT);
DROP FUNCTION IF EXISTS spool_claim(TEXT, INTEGER, TEXT, BIGINT, BIGINT, TEXT, TEXT);
CREATE FUNCTION spool_claim(p_stage TEXT, p_limit INTEGER, p_worker TEXT,
                            p_lease_ms BIGINT, p_token BIGINT,
                            p_provider TEXT DEFAULT NULL, p_fallback TEXT DEFAULT NULL)
RETURNS TABLE (run_id BIGINT, task_id BIGINT, stage TEXT, attempt INTEGER,
               failed_attempts INTEGER, lost_attempts INTEGER, snoozed_ms BIGINT,
               max_retries INTEGER, channel_id TEXT, priority spool_priority, payload JSONB,
               inputs JSONB, provider TEXT, wait_ms BIGINT, held_back TEXT, context JSONB)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
  v_hints JSONB;
  v_rescan BOOLEAN;
  v_from BIGINT[];
  v_heads BIGINT[];
  v_ids BIGINT[];
  v_new JSONB := '{}';
  v_drained BOOLEAN;
  v_lim INTEGER := p_limit; -- runs to walk to
  -- providers (NULL without p_provider)
  v_now TIMESTAMPTZ;
  v_a RECORD;               -- the primary's admission
  v_f RECORD;               -- the fallback's (when v_fell)
  v_fell BOOLEAN := false;
  v_prov TEXT;              -- the provider the claim is made under
  v_cand BIGINT[];          -- the runs walked to
  v_t RECORD;               -- what of them is admitted (spool_provider_prefix)
  v_units JSONB;            -- run id -> quota units charged
  v_each FLOAT8;            -- or the units of every run, when all cost the same
  v_total FLOAT8;           -- the units of the runs admitted
  v_need FLOAT8;            -- units of the first run left out
  v_primary_need FLOAT8;    -- the same, under the primary's quota
  v_h RECORD;               -- admission after the claim: why not more
  v_h1 RECORD;              -- the same for the primary, after a fallback
  v_held TEXT;
  v_wait BIGINT;
  v_charged BOOLEAN;
  -- budgets
  v_costs NUMERIC[];        -- the estimates of the runs walked to (v_ids, in order)
  v_prov_n INTEGER := 0;    -- runs the provider admitted
  v_b RECORD;               -- spool_budget_admit's answer
  v_bday TIMESTAMPTZ;       -- the budget day reserved on (NULL: nothing reserved)
  v_bclients BIGINT[];      -- runs also reserved on their client's row
  v_bheld TEXT;             -- why the budgets held paid runs back
  v_bwait BIGINT;
BEGIN
  -- A claim lost in a server crash only puts the run back in the queue; the
  -- worker's later outcome is then refused by the fence (a re-claim by the
  -- same worker at the same attempt number carries a new token), and its
  -- heartbeat learns that it lost the run. So claims need not wait for their
  -- commit to reach disk; outcomes do.
  PERFORM set_config('synchronous_commit', 'off', true);
  IF EXISTS (SELECT 1 FROM stage_runs r
              WHERE r.stage = p_stage AND r.state = 'scheduled' AND r.ready_at <= now()) THEN
    PERFORM spool_promote(p_stage, 1000);
  END IF;
  IF p_provider IS NOT NULL THEN
    IF p_fallback = p_provider THEN
      p_fallback := NULL;
    END IF;
    IF p_fallback IS NULL THEN
      PERFORM 1 FROM spool_providers s WHERE s.name = p_provider FOR UPDATE;
    ELSE
      PERFORM 1 FROM spool_providers s WHERE s.name IN (p_provider, p_fallback)
        ORDER BY s.name FOR UPDATE;
    END IF;
    v_now := clock_timestamp(); -- after the lock: what the last holder wrote is past
    -- (The admission and the charge are called as expressions: a statement
    -- around them would cost an executor start and a materialized row.)
    v_a := spool_provider_admit(p_provider, p_limit, v_now);
    v_prov := p_provider;
    IF v_a.n = 0 AND v_a.fallback_ok AND p_fallback IS NOT NULL THEN
      v_f := spool_provider_admit(p_fallback, p_limit, v_now);
      v_fell := true;
      v_prov := p_fallback;
      v_lim := least(p_limit, v_f.n + 1);
    ELSE
      v_lim := least(p_limit, v_a.n + 1);
    END IF;
  END IF;
  v_hints := spool_fair_hints();
  -- Once a second, from the front: runs that landed behind a remembered head.
  v_rescan := coalesce((v_hints ->> (p_stage || '/rescan'))::float8, 0)
              < extract(epoch FROM now()) - 1;
  v_from := CASE WHEN v_rescan THEN '{0,0,0}'::BIGINT[] ELSE ARRAY[
              coalesce((v_hints ->> (p_stage || '/high'))::bigint, 0),
              coalesce((v_hints ->> (p_stage || '/normal'))::bigint, 0),
              coalesce((v_hints ->> (p_stage || '/low'))::bigint, 0)] END;
  SELECT array_agg(p.id), array_agg(p.est_cost),
         ARRAY[min(p.fair_round) FILTER (WHERE p.priority = 'high'),
               min(p.fair_round) FILTER (WHERE p.priority = 'normal'),
               min(p.fair_round) FILTER (WHERE p.priority = 'low')]
    INTO v_ids, v_costs, v_heads
    FROM (
      SELECT * FROM (
        SELECT r.id, r.priority, r.fair_round, r.est_cost FROM stage_runs r
         WHERE r.stage = p_stage AND r.priority = 'high' AND r.state = 'ready'
           AND r.fair_round >= v_from[1]
         ORDER BY r.fair_round, r.fair_seq LIMIT v_lim FOR UPDATE SKIP LOCKED) h
      UNION ALL -- run in order, and only as far as the LIMIT below needs
      SELECT * FROM (
        SELECT r.id, r.priority, r.fair_round, r.est_cost FROM stage_runs r
         WHERE r.stage = p_stage AND r.priority = 'normal' AND r.state = 'ready'
           AND r.fair_round >= v_from[2]
         ORDER BY r.fair_round, r.fair_seq LIMIT v_lim FOR UPDATE SKIP LOCKED) n
      UNION ALL
      SELECT * FROM (
        SELECT r.id, r.priority, r.fair_round, r.est_cost FROM stage_runs r
         WHERE r.stage = p_stage AND r.priority = 'low' AND r.state = 'ready'
           AND r.fair_round >= v_from[3]
         ORDER BY r.fair_round, r.fair_seq LIMIT v_lim FOR UPDATE SKIP LOCKED) l
      LIMIT v_lim) p;
  -- Remember the heads that moved (most claims stay within a round).
  IF v_rescan OR v_heads[1] <> v_from[1] OR v_heads[2] <> v_from[2]
     OR v_heads[3] <> v_from[3] THEN
    v_drained := coalesce(cardinality(v_ids), 0) < v_lim;
    FOR i IN REVERSE 3..1 LOOP
      IF v_heads[i] IS NOT NULL THEN
        v_drained := true; -- the priorities before this one were walked to the end
      ELSIF v_rescan AND v_drained THEN
        -- Nothing ready: whatever comes starts at the highest round handed out.
        v_heads[i] := (SELECT max(c.last_round) FROM stage_fair_channels c
                        WHERE c.stage = p_stage
                          AND c.priority = (enum_range(NULL::spool_priority))[i]);
      END IF;
      IF v_heads[i] IS NOT NULL THEN
        v_new := v_new || jsonb_build_object(
          p_stage || '/' || (enum_range(NULL::spool_priority))[i]::text, v_heads[i]);
      END IF;
    END LOOP;
    IF v_rescan THEN
      v_new := v_new || jsonb_build_object(p_stage || '/rescan', extract(epoch FROM now()));
    END IF;
    PERFORM set_config('spool.fair_hints', (v_hints || v_new)::text, false);
  END IF;
  IF p_provider IS NOT NULL AND v_ids IS NOT NULL THEN
    v_cand := v_ids;
    IF NOT v_fell AND cardinality(v_cand) <= v_a.n
       AND (v_a.units_left IS NULL
            OR cardinality(v_cand) * v_a.unit_each <= v_a.units_left + 1e-9) THEN
      -- Every run walked is admitted, and without quota or with every call
      -- costing units_per_call they all fit: nothing to pick, no payload to
      -- read.
      v_each := v_a.unit_each;
      v_total := coalesce(cardinality(v_cand) * v_each, 0);
    ELSIF NOT v_fell THEN
      SELECT * INTO v_t FROM spool_provider_prefix(p_provider, v_cand, v_a.n, v_a.units_left);
      IF v_t.ids IS NULL AND v_a.n > 0 AND p_fallback IS NOT NULL THEN
        -- Admitted, but the quota is too small for the next run.
        v_primary_need := v_t.next_units;
        v_f := spool_provider_admit(p_fallback, p_limit, v_now);
        v_fell := true;
        v_prov := p_fallback;
      END IF;
    END IF;
    IF v_fell THEN
      SELECT * INTO v_t FROM spool_provider_prefix(p_fallback, v_cand, v_f.n, v_f.units_left);
    END IF;
    IF v_total IS NULL THEN -- picked by spool_provider_prefix
      v_ids := v_t.ids;
      v_units := v_t.units;
      v_need := v_t.next_units;
      v_total := v_t.total;
      v_costs := (SELECT array_agg(r.est_cost ORDER BY x.k)
                    FROM unnest(v_ids) WITH ORDINALITY AS x(id, k)
                    JOIN stage_runs r ON r.id = x.id);
    END IF;
    v_prov_n := coalesce(cardinality(v_ids), 0);
    -- The hard budgets may hold paid runs back: the provider is charged for
    -- what is claimed.
    IF v_ids IS NOT NULL AND 0 < ANY (v_costs) THEN
      v_b := spool_budget_admit(v_ids, v_costs, p_stage);
      v_bday := v_b.day;
      v_bclients := v_b.clients;
      v_bheld := v_b.held;
      v_bwait := v_b.wait_ms;
      IF coalesce(cardinality(v_b.ids), 0) < v_prov_n THEN
        v_ids := v_b.ids;
        v_total := CASE WHEN v_units IS NULL THEN coalesce(cardinality(v_ids) * v_each, 0)
                        ELSE (SELECT coalesce(sum((v_units ->> x::text)::float8), 0)
                                FROM unnest(v_ids) AS x) END;
      END IF;
    END IF;
    IF v_fell AND coalesce(v_primary_need, v_a.quota_need) IS NOT NULL THEN
      -- The primary's quota cannot cover the next run: that is its exhaustion.
      PERFORM spool_provider_quota_events(p_provider, v_a.window_start, v_a.window_end,
                                          coalesce(v_primary_need, v_a.quota_need));
    END IF;
    IF v_ids IS NOT NULL THEN
      IF v_fell THEN
        v_charged := spool_provider_charge(p_fallback, v_now, cardinality(v_ids), v_f.tokens,
                                      v_total, v_f.window_start, v_f.window_end,
                                      v_f.running_base, v_f.quota);
      ELSE
        v_charged := spool_provider_charge(p_provider, v_now, cardinality(v_ids), v_a.tokens,
                                      v_total, v_a.window_start, v_a.window_end,
                                      v_a.running_base, v_a.quota);
      END IF;
    END IF;
  END IF;
  IF p_provider IS NULL AND v_ids IS NOT NULL AND 0 < ANY (v_costs) THEN
    v_b := spool_budget_admit(v_ids, v_costs, p_stage);
    v_ids := v_b.ids;
    v_bday := v_b.day;
    v_bclients := v_b.clients;
    v_bheld := v_b.held;
    v_bwait := v_b.wait_ms;
  END IF;
  IF v_ids IS NOT NULL THEN
    RETURN QUERY
    WITH claimed AS (
      UPDATE stage_runs r
         SET state = 'running', attempt = r.attempt + 1, lease_owner = p_worker,
             lease_token = p_token, lease_expires_at = now() + p_lease_ms * interval '1 millisecond',
             claimed_at = now(), updated_at = now(),
             provider = v_prov,
             units_charged = coalesce((v_units ->> r.id::text)::float8, v_each),
             reserved = CASE WHEN v_bday IS NOT NULL AND r.est_cost > 0 THEN r.est_cost END,
             reserved_day = CASE WHEN v_bday IS NOT NULL AND r.est_cost > 0 THEN v_bday END,
             reserved_client = coalesce(r.id = ANY (v_bclients), false)
       WHERE r.id = ANY (v_ids)
      RETURNING r.id, r.task_id, r.stage, r.attempt, r.failed_attempts, r.lost_attempts,
                r.snoozed_ms, r.max_retries, r.channel_id, r.priority, r.depends_on, r.fair_round,
                r.fair_seq, r.provider
    ), opened AS (
      INSERT INTO stage_attempts (stage_run_id, task_id, stage, attempt, worker_id, provider)
      SELECT c.id, c.task_id, c.stage, c.attempt, p_worker, c.provider FROM claimed c
    )
    SELECT c.id, c.task_id, c.stage, c.attempt, c.failed_attempts, c.lost_attempts,
           c.snoozed_ms, c.max_retries, c.channel_id, c.priority, t.payload,
           CASE WHEN cardinality(c.depends_on) = 0 THEN '{}'::jsonb ELSE
             (SELECT coalesce(jsonb_object_agg(u.stage, u.output), '{}'::jsonb)
                FROM stage_runs u
               WHERE u.task_id = c.task_id AND u.stage = ANY (c.depends_on)
                 AND u.output IS NOT NULL)
           END,
           c.provider, NULL::BIGINT, NULL::TEXT, t.context
      FROM claimed c JOIN tasks t ON t.id = c.task_id
     ORDER BY c.priority, c.fair_round, c.fair_seq;
  END IF;

  -- Held back by the provider while runs remained: say why, and for how long.
  IF p_provider IS NOT NULL
     AND v_prov_n < p_limit
     AND coalesce(cardinality(v_cand), 0) > v_prov_n THEN
    -- The same admission again, now that this claim is counted.
    v_h := spool_provider_hold(v_prov, p_stage, v_now, v_need);
    v_held := v_h.reasons;
    v_wait := v_h.wait_ms;
    IF v_fell THEN
      v_h1 := spool_provider_hold(p_provider, p_stage, v_now, v_primary_need);
      v_held := v_h1.reasons || '; fallback ' || p_fallback || ': ' || v_held;
      v_wait := least(v_h1.wait_ms, v_wait);
    END IF;
  END IF;
  IF v_bheld IS NOT NULL THEN
    v_held := concat_ws('; ', v_held, v_bheld);
    v_wait := CASE WHEN v_held = v_bheld THEN v_bwait ELSE least(v_wait, v_bwait) END;
  END IF;
  IF v_held IS NOT NULL THEN
    RETURN QUERY SELECT NULL::BIGINT, NULL::BIGINT, p_stage, NULL::INTEGER, NULL::INTEGER,
                        NULL::INTEGER, NULL::BIGINT, NULL::INTEGER, NULL::TEXT,
                        NULL::spool_priority, NULL::JSONB, NULL::JSONB, v_prov, v_wait, v_held,
                        NULL::JSONB;
  END IF;
END $$;
