-- Records outcomes, each fenced by (worker, attempt, lease token): a run no
-- longer held by that claim is left alone and reported as refused.
-- p_kinds: ok, retry (counts a failed attempt; p_delays_ms of backoff), lost
-- (a lease lost because its worker died or stalled: counts a lost lease,
-- apart from failed attempts), snooze (no attempt counted; the delay adds to
-- snoozed_ms), release (no attempt counted, ready at once), fail (no retry).
-- A failed attempt past max_retries, or a lost lease past max_lost, fails the
-- run. A failed run fails its task unless the stage is
-- optional (then the task ends partially_completed). Completing a run readies
-- the dependents whose inputs are all done; the last run completes the task.
-- A dependent behind the approval gate (needs_approval) of a task not yet
-- approved stays blocked instead, and its task goes to awaiting_approval
-- (NOTIFY spool_approval, payload: the task id) until spool_approve. The
-- tasks an outcome changed are NOTIFYed on spool_task (spool_notify_tasks).
-- p_started_us and p_finished_us (optional; microseconds since the epoch, 0 or
-- NULL when unknown) say when the execution really ran: the attempt keeps
-- them instead of the claim's time and this call's.
--
-- Locks, in this order: the batch's runs, their tasks (in id order), their
-- attempts, then the tasks' other runs and channel counters (in key order).
-- Claims never wait (SKIP LOCKED, then only rows they hold), a run is held by
-- one worker, and tasks are taken in one order, so concurrent claims and
-- outcomes queue up rather than deadlock. spool_cancel and spool_set_priority
-- lock a task before its runs; racing an outcome of that task they can
-- deadlock (rarely): the store retries.
--
-- Cost: an outcome's cost adds to its task's actual_cost; a task that passes
-- its estimate times budgets.overrun_factor gets overrun_at and one
-- cost_overrun event. Outcomes that cost something or give back a budget
-- reservation go to spool_budget_outcomes (R_budgets.sql) at the very end.
--
-- Providers: outcomes of runs a provider admitted (stage_runs.provider) go to
-- spool_provider_outcomes (R_provider_outcomes.sql) at the end: breaker,
-- pauses, units a release gives back, wake-ups of stages waiting for a slot.
-- Provider rows are locked last, in name order.
--
-- Cost: the runs, their attempts and their tasks are written by one
-- statement; the rest (rejoining the queue, readying dependents, skipping
-- what a failure left) runs only when the batch needs it. The fence compares
-- state with a value the planner cannot see: with the literal 'running' it
-- could drive the update from stage_runs_lease_idx (every running run, a
-- handful by the statistics of a quiet moment) instead of the input ids.
CREATE OR REPLACE FUNCTION spool_record_outcomes(
  p_workers TEXT[], p_runs BIGINT[], p_attempts INTEGER[], p_tokens BIGINT[], p_kinds TEXT[],
  p_delays_ms BIGINT[], p_outputs JSONB[], p_costs NUMERIC[], p_classes TEXT[],
  p_messages TEXT[], p_started_us BIGINT[] DEFAULT NULL, p_finished_us BIGINT[] DEFAULT NULL)
RETURNS TABLE (run_id BIGINT, accepted BOOLEAN, state spool_run_state)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
  v_ids BIGINT[];              -- accepted runs
  v_states spool_run_state[];  -- and their states now
  v_rejoin BIGINT[];           -- ready again at once (immediate retry, release)
  v_res_tasks BIGINT[];        -- done (or failed optional) runs whose task
  v_res_stages TEXT[];         -- has runs left: their dependents may be ready
  v_failed_tasks BIGINT[];     -- tasks a required run failed
  v_ready BIGINT[];
  v_gated BIGINT[];            -- tasks whose gated runs wait for approval
  v_touched BIGINT[];          -- every task an accepted outcome changed
  -- accepted outcomes of runs a provider admitted
  v_p_names TEXT[]; v_p_stages TEXT[]; v_p_kinds TEXT[]; v_p_classes TEXT[];
  v_p_delays BIGINT[]; v_p_units FLOAT8[]; v_p_claimed TIMESTAMPTZ[];
  -- accepted outcomes that cost something or give a reservation back
  v_b_costs NUMERIC[]; v_b_reserved NUMERIC[]; v_b_days TIMESTAMPTZ[]; v_b_clients BOOLEAN[];
  v_b_stages TEXT[]; v_b_providers TEXT[]; v_b_tasks BIGINT[];
  -- and, per task with a cost, its client, campaign and cost
  v_t_clients TEXT[]; v_t_campaigns TEXT[]; v_t_costs NUMERIC[];
  v_overruns BIGINT[];         -- tasks whose actual cost just passed the overrun line
BEGIN
  WITH input AS (
    SELECT * FROM unnest(p_workers, p_runs, p_attempts, p_tokens, p_kinds, p_delays_ms,
                         p_outputs, p_costs, p_classes, p_messages, p_started_us,
                         p_finished_us)
           AS i(worker, run_id, attempt, token, kind, delay_ms, output, cost, class, message,
                started_us, finished_us)
  ), applied AS (
    UPDATE stage_runs r SET
      state = (CASE
        WHEN i.kind = 'ok' THEN 'done'
        WHEN i.kind = 'fail' THEN 'failed'
        WHEN i.kind = 'retry' AND r.failed_attempts + 1 > r.max_retries THEN 'failed'
        WHEN i.kind = 'lost' AND r.lost_attempts + 1 > r.max_lost THEN 'failed'
        WHEN i.kind = 'release' OR coalesce(i.delay_ms, 0) <= 0 THEN 'ready'
        ELSE 'scheduled' END)::spool_run_state,
      failed_attempts = r.failed_attempts
        + (CASE WHEN i.kind IN ('retry', 'fail') THEN 1 ELSE 0 END),
      lost_attempts = r.lost_attempts + (CASE WHEN i.kind = 'lost' THEN 1 ELSE 0 END),
      -- a snooze counts at least a second: zero-length snoozes would never
      -- reach the stage's cap on the time a run may spend snoozed
      snoozed_ms = r.snoozed_ms
        + (CASE WHEN i.kind = 'snooze' THEN greatest(coalesce(i.delay_ms, 0), 1000) ELSE 0 END),
      ready_at = now() + greatest(coalesce(i.delay_ms, 0), 0) * interval '1 millisecond',
      output = CASE WHEN i.kind = 'ok' THEN coalesce(i.output, '{}'::jsonb) ELSE r.output END,
      cost = r.cost + coalesce(i.cost, 0),
      error_class = CASE WHEN i.kind IN ('ok', 'release') THEN NULL ELSE i.class END,
      error_message = CASE
        WHEN i.kind IN ('ok', 'release') THEN NULL
        WHEN i.kind = 'lost' AND r.lost_attempts + 1 > r.max_lost
          THEN format('lease lost %s times (its workers died or stalled while running it); '
                      'retry.max_lost_leases is %s', r.lost_attempts + 1, r.max_lost)
        ELSE i.message END,
      lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL,
      finished_at = CASE WHEN i.kind IN ('ok', 'fail')
                           OR (i.kind = 'retry' AND r.failed_attempts + 1 > r.max_retries)
                           OR (i.kind = 'lost' AND r.lost_attempts + 1 > r.max_lost)
                         THEN now() END,
      updated_at = now()
      FROM input i
     WHERE r.id = i.run_id AND r.lease_owner = i.worker AND r.attempt = i.attempt
       AND r.lease_token IS NOT DISTINCT FROM i.token
       AND r.state = (SELECT 'running'::spool_run_state)
    RETURNING r.id, r.task_id, r.stage, r.attempt, i.kind, r.state, r.optional, r.output,
              coalesce(i.cost, 0) AS cost, i.class,
              coalesce(r.error_message, i.message) AS message,
              i.kind IN ('retry', 'lost', 'fail') AS counted, i.started_us, i.finished_us,
              r.provider, r.units_charged, r.claimed_at, i.delay_ms,
              r.reserved, r.reserved_day, r.reserved_client
  ), closed AS (
    UPDATE stage_attempts a SET
      started_at = CASE WHEN x.started_us > 0
                        THEN 'epoch'::timestamptz + x.started_us * interval '1 microsecond'
                        ELSE a.started_at END,
      finished_at = CASE WHEN x.finished_us > 0
                         THEN 'epoch'::timestamptz + x.finished_us * interval '1 microsecond'
                         ELSE now() END,
      outcome = CASE
        WHEN x.kind = 'ok' THEN 'ok'
        WHEN x.state = 'failed' THEN 'failed'
        WHEN x.kind = 'snooze' THEN 'snoozed'
        WHEN x.kind = 'release' THEN 'released'
        ELSE x.kind END,
      error_class = x.class, error_message = x.message, cost = x.cost
      FROM applied x
     WHERE a.stage_run_id = x.id AND a.attempt = x.attempt
  ), per_task AS (
    -- Task bookkeeping: cost, retries, media, state. Counters instead of a
    -- look at the task's other runs: the row lock on the task serializes
    -- concurrent outcomes, and the one that finishes the last run sees 0.
    -- Tasks are locked in id order, so concurrent recorders queue up.
    SELECT x.task_id, sum(x.cost) AS cost, count(*) FILTER (WHERE x.counted) AS retries,
           count(*) FILTER (WHERE x.state IN ('done', 'failed')) AS finished,
           count(*) FILTER (WHERE x.state = 'failed' AND x.optional) AS optional_failed,
           bool_or(x.state = 'failed' AND NOT x.optional) AS failed,
           -- the first of the batch, in run id order (the rows come sorted)
           (array_agg(x.output -> 'video_url')
              FILTER (WHERE x.state = 'done' AND x.output ? 'video_url'))[1] AS video_url,
           (array_agg(x.output -> 'storyboard')
              FILTER (WHERE x.state = 'done' AND x.output ? 'storyboard'))[1] AS storyboard,
           (array_agg(x.stage || ': ' || coalesce(x.message, x.class, 'failed'))
              FILTER (WHERE x.kind <> 'ok' AND x.kind <> 'release'))[1] AS error,
           array_agg(x.stage)
             FILTER (WHERE x.state = 'done' OR (x.state = 'failed' AND x.optional)) AS resolved
      FROM (SELECT * FROM applied ORDER BY task_id, id) x
     GROUP BY x.task_id ORDER BY x.task_id
  ), bookkept AS (
    UPDATE tasks t SET
      actual_cost = t.actual_cost + p.cost,
      retry_count = t.retry_count + p.retries,
      runs_pending = t.runs_pending - p.finished,
      optional_failed = t.optional_failed + p.optional_failed,
      video_url = coalesce(p.video_url #>> '{}', t.video_url),
      storyboard_data = coalesce(p.storyboard, t.storyboard_data),
      error_message = coalesce(p.error, t.error_message),
      state = (CASE
        WHEN t.state IN ('completed', 'partially_completed', 'failed', 'cancelled')
          THEN t.state::text
        WHEN p.failed THEN 'failed'
        WHEN t.runs_pending - p.finished > 0 AND t.state = 'awaiting_approval'
          THEN 'awaiting_approval'
        WHEN t.runs_pending - p.finished > 0 THEN 'running'
        WHEN t.optional_failed + p.optional_failed > 0 THEN 'partially_completed'
        ELSE 'completed' END)::spool_task_state,
      finished_at = CASE
        WHEN t.finished_at IS NULL AND (p.failed OR t.runs_pending - p.finished <= 0) THEN now()
        ELSE t.finished_at END,
      -- The overrun line: once, the first time the actual cost passes it.
      overrun_at = CASE
        WHEN t.overrun_at IS NULL AND p.cost > 0 AND t.estimated_cost > 0
             AND t.actual_cost + p.cost
                 > t.estimated_cost * (SELECT b.overrun_factor FROM spool_budgets b
                                        WHERE b.scope = 'total')
          THEN now() ELSE t.overrun_at END,
      updated_at = now()
      FROM per_task p WHERE t.id = p.task_id
    RETURNING t.id, t.runs_pending, p.resolved, p.failed,
              p.cost > 0 AND t.overrun_at = now() AS overran, p.cost, t.client_id,
              t.campaign_id
  )
  -- Two one-row aggregates side by side (a join of applied and bookkept
  -- would be planned for one row each, and be quadratic).
  SELECT a.ids, a.states, a.rejoin, b.res_tasks, b.res_stages, f.failed_tasks,
         a.p_names, a.p_stages, a.p_kinds, a.p_classes, a.p_delays, a.p_units, a.p_claimed,
         a.b_costs, a.b_reserved, a.b_days, a.b_clients, a.b_stages, a.b_providers, a.b_tasks,
         f.overruns, f.t_clients, f.t_campaigns, f.t_costs, f.touched
    INTO v_ids, v_states, v_rejoin, v_res_tasks, v_res_stages, v_failed_tasks,
         v_p_names, v_p_stages, v_p_kinds, v_p_classes, v_p_delays, v_p_units, v_p_claimed,
         v_b_costs, v_b_reserved, v_b_days, v_b_clients, v_b_stages, v_b_providers, v_b_tasks,
         v_overruns, v_t_clients, v_t_campaigns, v_t_costs, v_touched
    FROM (SELECT array_agg(x.id) AS ids, array_agg(x.state) AS states,
                 array_agg(x.id ORDER BY x.id) FILTER (WHERE x.state = 'ready') AS rejoin,
                 -- (one order for all seven: the rows' own)
                 array_agg(x.provider) FILTER (WHERE x.provider IS NOT NULL) AS p_names,
                 array_agg(x.stage) FILTER (WHERE x.provider IS NOT NULL) AS p_stages,
                 array_agg(x.kind) FILTER (WHERE x.provider IS NOT NULL) AS p_kinds,
                 array_agg(x.class) FILTER (WHERE x.provider IS NOT NULL) AS p_classes,
                 array_agg(x.delay_ms) FILTER (WHERE x.provider IS NOT NULL) AS p_delays,
                 array_agg(x.units_charged) FILTER (WHERE x.provider IS NOT NULL) AS p_units,
                 array_agg(x.claimed_at) FILTER (WHERE x.provider IS NOT NULL) AS p_claimed,
                 -- (and one for these seven)
                 array_agg(x.cost) FILTER (WHERE x.cost > 0 OR x.reserved IS NOT NULL) AS b_costs,
                 array_agg(x.reserved)
                   FILTER (WHERE x.cost > 0 OR x.reserved IS NOT NULL) AS b_reserved,
                 array_agg(x.reserved_day)
                   FILTER (WHERE x.cost > 0 OR x.reserved IS NOT NULL) AS b_days,
                 array_agg(x.reserved_client)
                   FILTER (WHERE x.cost > 0 OR x.reserved IS NOT NULL) AS b_clients,
                 array_agg(x.stage) FILTER (WHERE x.cost > 0 OR x.reserved IS NOT NULL) AS b_stages,
                 array_agg(x.provider)
                   FILTER (WHERE x.cost > 0 OR x.reserved IS NOT NULL) AS b_providers,
                 array_agg(x.task_id)
                   FILTER (WHERE x.cost > 0 OR x.reserved IS NOT NULL) AS b_tasks
            FROM applied x) a,
         -- only tasks with runs left can have runs waiting for these
         (SELECT array_agg(k.id) AS res_tasks, array_agg(r.stage) AS res_stages
            FROM bookkept k CROSS JOIN LATERAL unnest(k.resolved) AS r(stage)
           WHERE k.runs_pending > 0) b,
         (SELECT array_agg(k.id) FILTER (WHERE k.failed) AS failed_tasks,
                 array_agg(k.id) AS touched,
                 array_agg(k.id) FILTER (WHERE k.overran) AS overruns,
                 array_agg(k.client_id) FILTER (WHERE k.cost > 0) AS t_clients,
                 array_agg(k.campaign_id) FILTER (WHERE k.cost > 0) AS t_campaigns,
                 array_agg(k.cost) FILTER (WHERE k.cost > 0) AS t_costs
            FROM bookkept k) f;

  -- Immediate retries and releases rejoin the queue now.
  IF v_rejoin IS NOT NULL THEN
    PERFORM spool_make_ready(v_rejoin, true);
  END IF;

  -- Dependencies: a done run, or a failed optional one, resolves its inputs.
  IF v_res_tasks IS NOT NULL THEN
    WITH hits AS (
      SELECT d.id, count(*) AS n
        FROM unnest(v_res_tasks, v_res_stages) AS x(task_id, stage)
        JOIN stage_runs d ON d.task_id = x.task_id AND x.stage = ANY (d.depends_on)
       WHERE d.state = 'blocked'
       GROUP BY d.id
    ), dec AS (
      UPDATE stage_runs d SET deps_pending = d.deps_pending - hits.n, updated_at = now()
        FROM hits WHERE d.id = hits.id
      RETURNING d.id, d.deps_pending, d.task_id, d.needs_approval
    )
    -- A run behind the approval gate of a task not approved yet stays
    -- blocked (inputs done), and its task awaits approval.
    SELECT array_agg(dec.id ORDER BY dec.id)
             FILTER (WHERE NOT dec.needs_approval OR t.approved),
           array_agg(DISTINCT dec.task_id) FILTER (WHERE dec.needs_approval AND NOT t.approved)
      INTO v_ready, v_gated
      FROM dec JOIN tasks t ON t.id = dec.task_id WHERE dec.deps_pending <= 0;
    IF v_ready IS NOT NULL THEN
      PERFORM spool_make_ready(v_ready, false);
    END IF;
    IF v_gated IS NOT NULL THEN
      UPDATE tasks t SET state = 'awaiting_approval', updated_at = now()
       WHERE t.id = ANY (v_gated) AND t.state IN ('queued', 'running');
      PERFORM pg_notify('spool_approval', x.id::text) FROM unnest(v_gated) AS x(id);
    END IF;
  END IF;

  -- A failed required run fails its task; what has not started is skipped.
  IF v_failed_tasks IS NOT NULL THEN
    UPDATE stage_runs r SET state = 'skipped', updated_at = now(), finished_at = now()
     WHERE r.task_id = ANY (v_failed_tasks) AND r.state IN ('blocked', 'ready', 'scheduled');
  END IF;

  -- What the outcomes tell about the providers that admitted the runs.
  IF v_p_names IS NOT NULL
     AND spool_provider_outcomes_needed(v_p_names, v_p_kinds, v_p_classes, v_p_units) THEN
    PERFORM spool_provider_outcomes(v_p_names, v_p_stages, v_p_kinds, v_p_classes, v_p_delays,
                                    v_p_units, v_p_claimed);
  END IF;

  -- Spend, reservations given back, soft budget warnings (R_budgets.sql);
  -- after the providers, whose rows claims lock before the budgets'.
  IF v_b_costs IS NOT NULL THEN
    PERFORM spool_budget_outcomes(v_b_costs, v_b_reserved, v_b_days, v_b_clients, v_b_stages,
                                  v_b_providers, v_b_tasks, v_t_clients, v_t_campaigns,
                                  v_t_costs);
  END IF;

  -- A task whose actual cost passed its estimate times the overrun factor:
  -- one event, the first time.
  IF v_overruns IS NOT NULL THEN
    INSERT INTO spool_provider_events (provider, kind, message, task_id)
    SELECT 'task:' || t.id, 'cost_overrun',
           format('task %s: actual cost %s USD is past %s x its estimate of %s USD',
                  t.id, trim_scale(t.actual_cost), b.overrun_factor,
                  trim_scale(t.estimated_cost)),
           t.id
      FROM tasks t CROSS JOIN spool_budgets b
     WHERE t.id = ANY (v_overruns) AND b.scope = 'total'
     ORDER BY t.id;
  END IF;

  PERFORM spool_notify_tasks(v_touched);

  -- In input order; a refused run reports the state it is in.
  RETURN QUERY
  SELECT i.run_id, x.id IS NOT NULL,
         coalesce(x.state, (SELECT r.state FROM stage_runs r WHERE r.id = i.run_id))
    FROM unnest(p_runs) WITH ORDINALITY AS i(run_id, ord)
    LEFT JOIN unnest(coalesce(v_ids, '{}'), coalesce(v_states, '{}')) AS x(id, state)
      ON x.id = i.run_id
   ORDER BY i.ord;
END $$;
