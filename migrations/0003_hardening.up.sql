-- 0003_hardening: what a worker and the database must agree on.
--
-- lease_token: the claim that holds a run, a number the claiming worker
--   process never hands out twice. A claim lost in a server crash (claims
--   commit asynchronously) can be re-made by the same worker at the same
--   attempt number; the token still differs, so the two executions never
--   share a fence. NULL while nobody holds the run.
-- lost_attempts / max_lost: leases lost because a worker died or stalled
--   count apart from provider failures (failed_attempts), with their own
--   limit, which still stops a run that crashes every worker taking it.
-- snoozed_ms: time the run spent snoozed (rate limited) so far, each snooze
--   counting at least a second; past the stage's cap it fails with class
--   rate_limited.
-- workers.stages / lease_ms: what a worker serves and how long its leases
--   last, so that `spool status` can tell stale workers and unserved stages.

ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS lease_token BIGINT;
ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS lost_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS max_lost INTEGER NOT NULL DEFAULT 5;
ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS snoozed_ms BIGINT NOT NULL DEFAULT 0;

ALTER TABLE workers ADD COLUMN IF NOT EXISTS stages TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE workers ADD COLUMN IF NOT EXISTS lease_ms BIGINT NOT NULL DEFAULT 30000;

-- The functions below replace their 0002 versions (copied, then changed):
-- claims carry a lease token, outcomes are fenced by it, lost leases and
-- snoozes are counted apart, and the heartbeat names what it extends.
DROP FUNCTION IF EXISTS spool_heartbeat(TEXT, BIGINT);
DROP FUNCTION IF EXISTS spool_record_outcomes(TEXT[], BIGINT[], INTEGER[], TEXT[], BIGINT[],
  JSONB[], NUMERIC[], TEXT[], TEXT[], BIGINT[], BIGINT[]);
DROP FUNCTION IF EXISTS spool_claim(TEXT, INTEGER, TEXT, BIGINT);

-- Enqueue many videos in one call. p_pipeline: [{"name", "after": [...],
-- "optional", "max_retries", "max_lost"}, ...]. Returns one row per input, in order:
-- the task id and whether it was created (false: the idempotency key existed).
-- Runs without inputs are inserted ready, in the fair order (in input order
-- within a channel), and idle workers are woken.
CREATE OR REPLACE FUNCTION spool_enqueue(
  p_clients TEXT[], p_campaigns TEXT[], p_channels TEXT[], p_priorities TEXT[],
  p_payloads JSONB[], p_keys TEXT[], p_estimates NUMERIC[], p_pipeline JSONB)
RETURNS TABLE (ord INTEGER, task_id BIGINT, created BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
  v_ords BIGINT[];
  v_ids BIGINT[];
  v_root_stages TEXT[];
  v_root_prios spool_priority[];
  v_root_channels TEXT[];
  v_rounds BIGINT[];
BEGIN
  -- Ids are drawn up front so that each input row knows its task; a row whose
  -- idempotency key exists already inserts nothing.
  WITH input AS (
    SELECT i.*, nextval(pg_get_serial_sequence('tasks', 'id')) AS new_id
      FROM unnest(p_clients, p_campaigns, p_channels, p_priorities, p_payloads,
                  p_keys, p_estimates)
           WITH ORDINALITY AS i(client_id, campaign_id, channel_id, priority, payload,
                                idem_key, estimate, ord)
  ), inserted AS (
    INSERT INTO tasks (id, client_id, campaign_id, channel_id, priority, payload,
                       idempotency_key, estimated_cost, runs_pending)
    SELECT i.new_id, i.client_id, i.campaign_id, i.channel_id, i.priority::spool_priority,
           i.payload, i.idem_key, coalesce(i.estimate, 0), jsonb_array_length(p_pipeline)
      FROM input i ORDER BY i.ord
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING tasks.id
  )
  SELECT array_agg(i.ord ORDER BY i.ord), array_agg(i.new_id ORDER BY i.ord)
    INTO v_ords, v_ids
    FROM input i WHERE i.new_id IN (SELECT id FROM inserted);

  IF v_ids IS NOT NULL THEN
    -- The roots (stages without inputs), in input order, and their places in
    -- the fair order.
    SELECT array_agg(s.name ORDER BY n.pos, s.pos), array_agg(t.priority ORDER BY n.pos, s.pos),
           array_agg(t.channel_id ORDER BY n.pos, s.pos)
      INTO v_root_stages, v_root_prios, v_root_channels
      FROM unnest(v_ids) WITH ORDINALITY AS n(id, pos)
      JOIN tasks t ON t.id = n.id
      CROSS JOIN ROWS FROM (jsonb_to_recordset(p_pipeline) AS (name TEXT, after TEXT[]))
           WITH ORDINALITY AS s(name, after, pos)
     WHERE cardinality(coalesce(s.after, '{}')) = 0;
    IF v_root_stages IS NOT NULL THEN
      v_rounds := spool_fair_rounds(v_root_stages, v_root_prios, v_root_channels);
    END IF;

    WITH stages AS (
      SELECT s.name, coalesce(s.after, '{}') AS after, coalesce(s.optional, false) AS optional,
             coalesce(s.max_retries, 3) AS max_retries, coalesce(s.max_lost, 5) AS max_lost,
             s.pos
        FROM ROWS FROM (jsonb_to_recordset(p_pipeline)
               AS (name TEXT, after TEXT[], optional BOOLEAN, max_retries INTEGER,
                   max_lost INTEGER))
             WITH ORDINALITY AS s(name, after, optional, max_retries, max_lost, pos)
    ), runs AS (
      SELECT t.id AS task_id, s.name AS stage, t.channel_id, t.priority, s.optional,
             s.max_retries, s.max_lost, s.after, n.pos, s.pos AS stage_pos,
             CASE WHEN cardinality(s.after) = 0
                  THEN row_number() OVER (PARTITION BY cardinality(s.after) = 0
                                          ORDER BY n.pos, s.pos) END AS root
        FROM unnest(v_ids) WITH ORDINALITY AS n(id, pos)
        JOIN tasks t ON t.id = n.id CROSS JOIN stages s
    )
    INSERT INTO stage_runs (task_id, stage, channel_id, priority, state, optional,
                            max_retries, max_lost, depends_on, deps_pending, ready_at,
                            fair_round, fair_seq)
    SELECT r.task_id, r.stage, r.channel_id, r.priority,
           CASE WHEN r.root IS NULL THEN 'blocked' ELSE 'ready' END::spool_run_state,
           r.optional, r.max_retries, r.max_lost, r.after, cardinality(r.after),
           CASE WHEN r.root IS NOT NULL THEN now() END, f.round,
           CASE WHEN r.root IS NOT NULL THEN nextval('spool_fair_seq') END
      FROM runs r
      LEFT JOIN unnest(v_rounds) WITH ORDINALITY AS f(round, root) ON f.root = r.root
     ORDER BY r.pos, r.stage_pos;

    PERFORM pg_notify('spool_wakeup', s.stage)
       FROM (SELECT DISTINCT x.stage FROM unnest(v_root_stages) AS x(stage)) s;
  END IF;

  RETURN QUERY
  SELECT i.ord::INTEGER, coalesce(n.id, t.id), n.id IS NOT NULL
    FROM unnest(p_keys) WITH ORDINALITY AS i(idem_key, ord)
    LEFT JOIN unnest(coalesce(v_ords, '{}'), coalesce(v_ids, '{}')) AS n(ord, id)
      ON n.ord = i.ord
    LEFT JOIN tasks t ON n.id IS NULL AND t.idempotency_key = i.idem_key
   ORDER BY i.ord;
END $$;

-- Claims up to p_limit ready runs of a stage for p_worker, in fair order,
-- with a lease of p_lease_ms and the lease token p_token (a number the
-- claiming worker process never hands out twice). Each claim counts a new
-- attempt number and opens its stage_attempts row; (worker, attempt, token)
-- fences every outcome. The task row is left
-- alone (claims stay cheap): a task turns running with its first outcome.
--
-- The first statement picks and locks the runs: per priority, in order, an
-- ordered walk of stage_runs_claim_idx from the remembered head (see the top
-- of this file) that stops once p_limit runs are found. The second works on
-- exactly those ids. Every plan is right whatever p_limit and the table
-- statistics are, so each is planned once per session (plan_cache_mode) and
-- never as a table scan (enable_seqscan: statistics taken while a table was
-- nearly empty must not turn a lookup into a scan of what it has grown to).
CREATE FUNCTION spool_claim(p_stage TEXT, p_limit INTEGER, p_worker TEXT,
                            p_lease_ms BIGINT, p_token BIGINT)
RETURNS TABLE (run_id BIGINT, task_id BIGINT, stage TEXT, attempt INTEGER,
               failed_attempts INTEGER, lost_attempts INTEGER, snoozed_ms BIGINT,
               channel_id TEXT, priority spool_priority, payload JSONB, inputs JSONB)
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
  v_hints := spool_fair_hints();
  -- Once a second, from the front: runs that landed behind a remembered head.
  v_rescan := coalesce((v_hints ->> (p_stage || '/rescan'))::float8, 0)
              < extract(epoch FROM now()) - 1;
  v_from := CASE WHEN v_rescan THEN '{0,0,0}'::BIGINT[] ELSE ARRAY[
              coalesce((v_hints ->> (p_stage || '/high'))::bigint, 0),
              coalesce((v_hints ->> (p_stage || '/normal'))::bigint, 0),
              coalesce((v_hints ->> (p_stage || '/low'))::bigint, 0)] END;
  SELECT array_agg(p.id),
         ARRAY[min(p.fair_round) FILTER (WHERE p.priority = 'high'),
               min(p.fair_round) FILTER (WHERE p.priority = 'normal'),
               min(p.fair_round) FILTER (WHERE p.priority = 'low')]
    INTO v_ids, v_heads
    FROM (
      SELECT * FROM (
        SELECT r.id, r.priority, r.fair_round FROM stage_runs r
         WHERE r.stage = p_stage AND r.priority = 'high' AND r.state = 'ready'
           AND r.fair_round >= v_from[1]
         ORDER BY r.fair_round, r.fair_seq LIMIT p_limit FOR UPDATE SKIP LOCKED) h
      UNION ALL -- run in order, and only as far as the LIMIT below needs
      SELECT * FROM (
        SELECT r.id, r.priority, r.fair_round FROM stage_runs r
         WHERE r.stage = p_stage AND r.priority = 'normal' AND r.state = 'ready'
           AND r.fair_round >= v_from[2]
         ORDER BY r.fair_round, r.fair_seq LIMIT p_limit FOR UPDATE SKIP LOCKED) n
      UNION ALL
      SELECT * FROM (
        SELECT r.id, r.priority, r.fair_round FROM stage_runs r
         WHERE r.stage = p_stage AND r.priority = 'low' AND r.state = 'ready'
           AND r.fair_round >= v_from[3]
         ORDER BY r.fair_round, r.fair_seq LIMIT p_limit FOR UPDATE SKIP LOCKED) l
      LIMIT p_limit) p;
  -- Remember the heads that moved (most claims stay within a round).
  IF v_rescan OR v_heads[1] <> v_from[1] OR v_heads[2] <> v_from[2]
     OR v_heads[3] <> v_from[3] THEN
    v_drained := coalesce(cardinality(v_ids), 0) < p_limit;
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
  IF v_ids IS NULL THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH claimed AS (
    UPDATE stage_runs r
       SET state = 'running', attempt = r.attempt + 1, lease_owner = p_worker,
           lease_token = p_token, lease_expires_at = now() + p_lease_ms * interval '1 millisecond',
           claimed_at = now(), updated_at = now()
     WHERE r.id = ANY (v_ids)
    RETURNING r.id, r.task_id, r.stage, r.attempt, r.failed_attempts, r.lost_attempts,
              r.snoozed_ms, r.channel_id, r.priority, r.depends_on, r.fair_round, r.fair_seq
  ), opened AS (
    INSERT INTO stage_attempts (stage_run_id, task_id, stage, attempt, worker_id)
    SELECT c.id, c.task_id, c.stage, c.attempt, p_worker FROM claimed c
  )
  SELECT c.id, c.task_id, c.stage, c.attempt, c.failed_attempts, c.lost_attempts,
         c.snoozed_ms, c.channel_id, c.priority, t.payload,
         CASE WHEN cardinality(c.depends_on) = 0 THEN '{}'::jsonb ELSE
           (SELECT coalesce(jsonb_object_agg(u.stage, u.output), '{}'::jsonb)
              FROM stage_runs u
             WHERE u.task_id = c.task_id AND u.stage = ANY (c.depends_on)
               AND u.output IS NOT NULL)
         END
    FROM claimed c JOIN tasks t ON t.id = c.task_id
   ORDER BY c.priority, c.fair_round, c.fair_seq;
END $$;

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
-- Cost: the runs, their attempts and their tasks are written by one
-- statement; the rest (rejoining the queue, readying dependents, skipping
-- what a failure left) runs only when the batch needs it. The fence compares
-- state with a value the planner cannot see: with the literal 'running' it
-- could drive the update from stage_runs_lease_idx (every running run, a
-- handful by the statistics of a quiet moment) instead of the input ids.
CREATE FUNCTION spool_record_outcomes(
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
              i.kind IN ('retry', 'lost', 'fail') AS counted, i.started_us, i.finished_us
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
        WHEN t.runs_pending - p.finished > 0 THEN 'running'
        WHEN t.optional_failed + p.optional_failed > 0 THEN 'partially_completed'
        ELSE 'completed' END)::spool_task_state,
      finished_at = CASE
        WHEN t.finished_at IS NULL AND (p.failed OR t.runs_pending - p.finished <= 0) THEN now()
        ELSE t.finished_at END,
      updated_at = now()
      FROM per_task p WHERE t.id = p.task_id
    RETURNING t.id, t.runs_pending, p.resolved, p.failed
  )
  -- Two one-row aggregates side by side (a join of applied and bookkept
  -- would be planned for one row each, and be quadratic).
  SELECT a.ids, a.states, a.rejoin, b.res_tasks, b.res_stages, f.failed_tasks
    INTO v_ids, v_states, v_rejoin, v_res_tasks, v_res_stages, v_failed_tasks
    FROM (SELECT array_agg(x.id) AS ids, array_agg(x.state) AS states,
                 array_agg(x.id ORDER BY x.id) FILTER (WHERE x.state = 'ready') AS rejoin
            FROM applied x) a,
         -- only tasks with runs left can have runs waiting for these
         (SELECT array_agg(k.id) AS res_tasks, array_agg(r.stage) AS res_stages
            FROM bookkept k CROSS JOIN LATERAL unnest(k.resolved) AS r(stage)
           WHERE k.runs_pending > 0) b,
         (SELECT array_agg(k.id) AS failed_tasks FROM bookkept k WHERE k.failed) f;

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
      RETURNING d.id, d.deps_pending
    )
    SELECT array_agg(dec.id ORDER BY dec.id) INTO v_ready FROM dec WHERE dec.deps_pending <= 0;
    IF v_ready IS NOT NULL THEN
      PERFORM spool_make_ready(v_ready, false);
    END IF;
  END IF;

  -- A failed required run fails its task; what has not started is skipped.
  IF v_failed_tasks IS NOT NULL THEN
    UPDATE stage_runs r SET state = 'skipped', updated_at = now(), finished_at = now()
     WHERE r.task_id = ANY (v_failed_tasks) AND r.state IN ('blocked', 'ready', 'scheduled');
  END IF;

  -- In input order; a refused run reports the state it is in.
  RETURN QUERY
  SELECT i.run_id, x.id IS NOT NULL,
         coalesce(x.state, (SELECT r.state FROM stage_runs r WHERE r.id = i.run_id))
    FROM unnest(p_runs) WITH ORDINALITY AS i(run_id, ord)
    LEFT JOIN unnest(coalesce(v_ids, '{}'), coalesce(v_states, '{}')) AS x(id, state)
      ON x.id = i.run_id
   ORDER BY i.ord;
END $$;

-- Returns runs whose lease expired to the queue (a lost lease counts, apart
-- from failed attempts; past max_lost they fail). Safe to run from every
-- worker at once.
CREATE OR REPLACE FUNCTION spool_rescue(p_limit INTEGER)
RETURNS TABLE (run_id BIGINT, accepted BOOLEAN, state spool_run_state)
LANGUAGE plpgsql AS $$
DECLARE
  v_workers TEXT[]; v_runs BIGINT[]; v_attempts INTEGER[]; v_tokens BIGINT[]; v_n INTEGER;
BEGIN
  SELECT array_agg(e.lease_owner), array_agg(e.id), array_agg(e.attempt),
         array_agg(e.lease_token), count(*)
    INTO v_workers, v_runs, v_attempts, v_tokens, v_n
    FROM (SELECT r.id, r.lease_owner, r.attempt, r.lease_token FROM stage_runs r
           WHERE r.state = 'running' AND r.lease_expires_at < now()
           ORDER BY r.lease_expires_at LIMIT p_limit
             FOR UPDATE SKIP LOCKED) e;
  IF v_n = 0 THEN
    RETURN;
  END IF;
  RETURN QUERY SELECT * FROM spool_record_outcomes(
    v_workers, v_runs, v_attempts, v_tokens, array_fill('lost'::TEXT, ARRAY[v_n]),
    array_fill(0::BIGINT, ARRAY[v_n]), array_fill(NULL::JSONB, ARRAY[v_n]),
    array_fill(0::NUMERIC, ARRAY[v_n]), array_fill('lost'::TEXT, ARRAY[v_n]),
    array_fill('lease expired (worker stopped heartbeating)'::TEXT, ARRAY[v_n]));
END $$;

-- Heartbeat. p_runs/p_attempts/p_tokens name exactly the claims the worker
-- is executing (or recording an outcome for). The database extends those
-- leases and nothing else, and answers with every named claim it no longer
-- attributes to the worker ('lost': the worker stops that execution and
-- records nothing for it). Runs it does attribute to the worker that the
-- worker did not name, from claims up to p_horizon (claims whose reply the
-- worker has had, or has given up on), are released at once ('released': a
-- claim whose reply was lost). Later claims may still be on their way.
--
-- It skips runs another transaction holds: an outcome being recorded (the
-- same worker's record connection: waiting could deadlock), a rescue or a
-- cancel; none of them needs the extension, and none is reported lost on a
-- lock alone (the lost check reads without locking).
CREATE FUNCTION spool_heartbeat(p_worker TEXT, p_lease_ms BIGINT, p_runs BIGINT[],
                                p_attempts INTEGER[], p_tokens BIGINT[], p_horizon BIGINT)
RETURNS TABLE (what TEXT, run_id BIGINT, attempt INTEGER, token BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
  v_orphans BIGINT[]; v_attempts INTEGER[]; v_tokens BIGINT[]; v_n INTEGER;
BEGIN
  UPDATE stage_runs r SET lease_expires_at = now() + p_lease_ms * interval '1 millisecond'
   WHERE r.id IN (SELECT h.id FROM stage_runs h
                    JOIN unnest(p_runs, p_attempts, p_tokens) AS x(id, attempt, token)
                      ON h.id = x.id AND h.attempt = x.attempt
                     AND h.lease_token IS NOT DISTINCT FROM x.token
                   WHERE h.lease_owner = p_worker AND h.state = 'running'
                     FOR UPDATE OF h SKIP LOCKED);
  UPDATE workers SET last_heartbeat = now(), lease_ms = p_lease_ms WHERE id = p_worker;

  RETURN QUERY
  SELECT 'lost'::TEXT, x.id, x.attempt, x.token
    FROM unnest(p_runs, p_attempts, p_tokens) AS x(id, attempt, token)
   WHERE NOT EXISTS (SELECT 1 FROM stage_runs h
                      WHERE h.id = x.id AND h.attempt = x.attempt
                        AND h.lease_token IS NOT DISTINCT FROM x.token
                        AND h.lease_owner = p_worker AND h.state = 'running');

  SELECT array_agg(o.id), array_agg(o.attempt), array_agg(o.lease_token), count(*)
    INTO v_orphans, v_attempts, v_tokens, v_n
    FROM (SELECT h.id, h.attempt, h.lease_token FROM stage_runs h
           WHERE h.lease_owner = p_worker AND h.state = 'running'
             AND h.lease_token <= p_horizon
             AND (h.id, h.attempt, h.lease_token) NOT IN
                 (SELECT * FROM unnest(p_runs, p_attempts, p_tokens))
             FOR UPDATE SKIP LOCKED) o;
  IF v_n > 0 THEN
    PERFORM spool_record_outcomes(
      array_fill(p_worker, ARRAY[v_n]), v_orphans, v_attempts, v_tokens,
      array_fill('release'::TEXT, ARRAY[v_n]), array_fill(0::BIGINT, ARRAY[v_n]),
      array_fill(NULL::JSONB, ARRAY[v_n]), array_fill(0::NUMERIC, ARRAY[v_n]),
      array_fill(NULL::TEXT, ARRAY[v_n]),
      array_fill('released: claimed for this worker, which was not running it '
                 '(the claim''s reply was lost)'::TEXT, ARRAY[v_n]));
    RETURN QUERY SELECT 'released'::TEXT, x.id, x.attempt, x.token
                   FROM unnest(v_orphans, v_attempts, v_tokens) AS x(id, attempt, token);
  END IF;
END $$;
