-- 0002_queue: the durable queue's server-side functions. Every write a worker
-- makes is one function call: one round trip, one transaction.
--
-- Fair order. A run that becomes ready gets a round (fair_round) and a global
-- readiness sequence number (fair_seq). Claims take ready runs ordered by
-- (priority, fair_round, fair_seq) straight off a partial index, so a claim's
-- cost depends on its size, not on the backlog. The k-th run a channel has
-- queued at once gets round max(last_round + 1, V), where V, the stage's
-- virtual time, is the round at the head of the ready queue (or, with nothing
-- ready, the highest round handed out). So channels alternate round by round,
-- a channel with 1,000 queued cannot starve one with 2, and a channel that
-- appears mid-stream joins the current round. Runs that come back (retry,
-- snooze, rescue, release) rejoin at V: they do not queue behind their
-- channel's backlog again.

CREATE TABLE IF NOT EXISTS stage_fair_channels (
  stage      TEXT NOT NULL,
  priority   spool_priority NOT NULL,
  channel_id TEXT NOT NULL,
  last_round BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (stage, priority, channel_id)
);

CREATE SEQUENCE IF NOT EXISTS spool_fair_seq;

CREATE OR REPLACE FUNCTION spool_virtual_time(p_stage TEXT, p_priority spool_priority)
RETURNS BIGINT LANGUAGE sql STABLE AS $$
  SELECT coalesce(
    (SELECT r.fair_round FROM stage_runs r
      WHERE r.stage = p_stage AND r.priority = p_priority AND r.state = 'ready'
      ORDER BY r.fair_round, r.fair_seq LIMIT 1),
    (SELECT max(c.last_round) FROM stage_fair_channels c
      WHERE c.stage = p_stage AND c.priority = p_priority),
    0)
$$;

-- Makes runs ready, placing them in the fair order. p_rejoin: runs coming
-- back (retry, rescue, release) rejoin at the virtual time; otherwise each
-- goes behind its channel's queued runs.
CREATE OR REPLACE FUNCTION spool_make_ready(p_ids BIGINT[], p_rejoin BOOLEAN)
RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
  IF cardinality(p_ids) = 0 THEN
    RETURN;
  END IF;
  IF p_rejoin THEN
    UPDATE stage_runs r
       SET state = 'ready', ready_at = now(), updated_at = now(),
           fair_round = spool_virtual_time(r.stage, r.priority),
           fair_seq = nextval('spool_fair_seq')
     WHERE r.id = ANY (p_ids);
  ELSE
    INSERT INTO stage_fair_channels (stage, priority, channel_id)
    SELECT DISTINCT r.stage, r.priority, r.channel_id
      FROM stage_runs r WHERE r.id = ANY (p_ids)
     ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING;
    -- Lock the channels' counters in one order: concurrent writers queue up
    -- instead of handing out the same rounds (or deadlocking).
    PERFORM 1 FROM stage_fair_channels c
     WHERE (c.stage, c.priority, c.channel_id) IN
           (SELECT r.stage, r.priority, r.channel_id FROM stage_runs r WHERE r.id = ANY (p_ids))
     ORDER BY c.stage, c.priority, c.channel_id
       FOR UPDATE;
    WITH runs AS (
      SELECT r.id, r.stage, r.priority, r.channel_id,
             row_number() OVER (PARTITION BY r.stage, r.priority, r.channel_id ORDER BY r.id) AS k
        FROM stage_runs r WHERE r.id = ANY (p_ids)
    ), groups AS (
      SELECT g.stage, g.priority, g.channel_id, g.n,
             greatest(c.last_round + 1, spool_virtual_time(g.stage, g.priority)) AS start
        FROM (SELECT stage, priority, channel_id, count(*) AS n FROM runs GROUP BY 1, 2, 3) g
        JOIN stage_fair_channels c USING (stage, priority, channel_id)
    ), counters AS (
      UPDATE stage_fair_channels c SET last_round = g.start + g.n - 1
        FROM groups g
       WHERE c.stage = g.stage AND c.priority = g.priority AND c.channel_id = g.channel_id
    )
    UPDATE stage_runs r
       SET state = 'ready', ready_at = now(), updated_at = now(),
           fair_round = g.start + runs.k - 1,
           fair_seq = nextval('spool_fair_seq')
      FROM runs JOIN groups g USING (stage, priority, channel_id)
     WHERE r.id = runs.id;
  END IF;
  PERFORM pg_notify('spool_wakeup', s.stage)
     FROM (SELECT DISTINCT r.stage FROM stage_runs r WHERE r.id = ANY (p_ids)) s;
END $$;

-- Enqueue many videos in one call. p_pipeline: [{"name", "after": [...],
-- "optional", "max_retries"}, ...]. Returns one row per input, in order:
-- the task id and whether it was created (false: the idempotency key existed).
CREATE OR REPLACE FUNCTION spool_enqueue(
  p_clients TEXT[], p_campaigns TEXT[], p_channels TEXT[], p_priorities TEXT[],
  p_payloads JSONB[], p_keys TEXT[], p_estimates NUMERIC[], p_pipeline JSONB)
RETURNS TABLE (ord INTEGER, task_id BIGINT, created BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
  v_ords BIGINT[];
  v_ids BIGINT[];
  v_roots BIGINT[];
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

  WITH stages AS (
    SELECT s.name, coalesce(s.after, '{}') AS after, coalesce(s.optional, false) AS optional,
           coalesce(s.max_retries, 3) AS max_retries, s.pos
      FROM ROWS FROM (jsonb_to_recordset(p_pipeline)
             AS (name TEXT, after TEXT[], optional BOOLEAN, max_retries INTEGER))
           WITH ORDINALITY AS s(name, after, optional, max_retries, pos)
  ), runs AS (
    INSERT INTO stage_runs (task_id, stage, channel_id, priority, state, optional,
                            max_retries, depends_on, deps_pending)
    SELECT t.id, s.name, t.channel_id, t.priority, 'blocked', s.optional, s.max_retries,
           s.after, cardinality(s.after)
      FROM unnest(coalesce(v_ids, '{}')) WITH ORDINALITY AS n(id, pos)
      JOIN tasks t ON t.id = n.id CROSS JOIN stages s
     ORDER BY n.pos, s.pos
    RETURNING stage_runs.id, stage_runs.deps_pending
  )
  SELECT array_agg(runs.id ORDER BY runs.id) INTO v_roots FROM runs WHERE runs.deps_pending = 0;
  PERFORM spool_make_ready(coalesce(v_roots, '{}'), false);

  RETURN QUERY
  SELECT i.ord::INTEGER, coalesce(n.id, t.id), n.id IS NOT NULL
    FROM unnest(p_keys) WITH ORDINALITY AS i(idem_key, ord)
    LEFT JOIN unnest(coalesce(v_ords, '{}'), coalesce(v_ids, '{}')) AS n(ord, id)
      ON n.ord = i.ord
    LEFT JOIN tasks t ON n.id IS NULL AND t.idempotency_key = i.idem_key
   ORDER BY i.ord;
END $$;

-- Moves runs whose backoff or snooze has passed from scheduled to ready.
CREATE OR REPLACE FUNCTION spool_promote(p_stage TEXT, p_limit INTEGER)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
  v_ids BIGINT[];
BEGIN
  SELECT array_agg(id) INTO v_ids FROM (
    SELECT r.id FROM stage_runs r
     WHERE r.stage = p_stage AND r.state = 'scheduled' AND r.ready_at <= now()
     ORDER BY r.ready_at LIMIT p_limit
       FOR UPDATE SKIP LOCKED) due;
  IF v_ids IS NULL THEN
    RETURN 0;
  END IF;
  PERFORM spool_make_ready(v_ids, true);
  RETURN cardinality(v_ids);
END $$;

-- Claims up to p_limit ready runs of a stage for p_worker, in fair order,
-- with a lease of p_lease_ms. Each claim counts a new attempt number (the
-- fencing token) and opens its stage_attempts row.
CREATE OR REPLACE FUNCTION spool_claim(p_stage TEXT, p_limit INTEGER, p_worker TEXT,
                                       p_lease_ms BIGINT)
RETURNS TABLE (run_id BIGINT, task_id BIGINT, stage TEXT, attempt INTEGER,
               failed_attempts INTEGER, channel_id TEXT, priority spool_priority,
               payload JSONB, inputs JSONB)
LANGUAGE plpgsql AS $$
BEGIN
  -- A claim lost in a server crash only puts the run back in the queue; the
  -- worker's later outcome is then refused by the fence. So claims need not
  -- wait for their commit to reach disk; outcomes do.
  PERFORM set_config('synchronous_commit', 'off', true);
  PERFORM spool_promote(p_stage, 1000);
  RETURN QUERY
  WITH picked AS (
    SELECT r.id FROM stage_runs r
     WHERE r.stage = p_stage AND r.state = 'ready'
     ORDER BY r.priority, r.fair_round, r.fair_seq
     LIMIT p_limit
       FOR UPDATE SKIP LOCKED
  ), claimed AS (
    UPDATE stage_runs r
       SET state = 'running', attempt = r.attempt + 1, lease_owner = p_worker,
           lease_expires_at = now() + p_lease_ms * interval '1 millisecond',
           claimed_at = now(), updated_at = now()
      FROM picked WHERE r.id = picked.id
    RETURNING r.id, r.task_id, r.stage, r.attempt, r.failed_attempts, r.channel_id,
              r.priority, r.depends_on, r.fair_round, r.fair_seq
  ), opened AS (
    INSERT INTO stage_attempts (stage_run_id, task_id, stage, attempt, worker_id)
    SELECT c.id, c.task_id, c.stage, c.attempt, p_worker FROM claimed c
  ), started AS (
    UPDATE tasks t SET state = 'running', updated_at = now()
     WHERE t.id = ANY (ARRAY(SELECT c.task_id FROM claimed c)) AND t.state = 'queued'
  )
  SELECT c.id, c.task_id, c.stage, c.attempt, c.failed_attempts, c.channel_id, c.priority,
         t.payload,
         CASE WHEN cardinality(c.depends_on) = 0 THEN '{}'::jsonb ELSE
           (SELECT coalesce(jsonb_object_agg(u.stage, u.output), '{}'::jsonb)
              FROM stage_runs u
             WHERE u.task_id = c.task_id AND u.stage = ANY (c.depends_on)
               AND u.output IS NOT NULL)
         END
    FROM claimed c JOIN tasks t ON t.id = c.task_id
   ORDER BY c.priority, c.fair_round, c.fair_seq;
END $$;

-- Records outcomes, each fenced by (worker, attempt): a run no longer held by
-- that worker at that attempt is left alone and reported as refused.
-- p_kinds: ok, retry (counts an attempt; p_delays_ms of backoff), lost (a
-- rescued lease: counts an attempt), snooze (no attempt counted), release (no
-- attempt counted, ready at once), fail (no retry). A counted attempt past
-- max_retries fails the run. A failed run fails its task unless the stage is
-- optional (then the task ends partially_completed). Completing a run readies
-- the dependents whose inputs are all done; the last run completes the task.
DO $$ BEGIN
  CREATE TYPE spool_applied_outcome AS (
    id BIGINT, task_id BIGINT, stage TEXT, attempt INTEGER, kind TEXT,
    new_state spool_run_state, optional BOOLEAN, output JSONB, cost NUMERIC,
    class TEXT, message TEXT, counted BOOLEAN);
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE OR REPLACE FUNCTION spool_record_outcomes(
  p_workers TEXT[], p_runs BIGINT[], p_attempts INTEGER[], p_kinds TEXT[],
  p_delays_ms BIGINT[], p_outputs JSONB[], p_costs NUMERIC[], p_classes TEXT[],
  p_messages TEXT[])
RETURNS TABLE (run_id BIGINT, accepted BOOLEAN, state spool_run_state)
LANGUAGE plpgsql AS $$
DECLARE
  v_ready BIGINT[];
  v_rejoin BIGINT[];
  v_applied spool_applied_outcome[];
BEGIN
  WITH input AS (
    SELECT * FROM unnest(p_workers, p_runs, p_attempts, p_kinds, p_delays_ms, p_outputs,
                         p_costs, p_classes, p_messages)
           AS i(worker, run_id, attempt, kind, delay_ms, output, cost, class, message)
  ), applied AS (
    UPDATE stage_runs r SET
      state = (CASE
        WHEN i.kind = 'ok' THEN 'done'
        WHEN i.kind = 'fail' THEN 'failed'
        WHEN i.kind IN ('retry', 'lost') AND r.failed_attempts + 1 > r.max_retries THEN 'failed'
        WHEN i.kind = 'release' OR coalesce(i.delay_ms, 0) <= 0 THEN 'ready'
        ELSE 'scheduled' END)::spool_run_state,
      failed_attempts = r.failed_attempts
        + (CASE WHEN i.kind IN ('retry', 'lost', 'fail') THEN 1 ELSE 0 END),
      ready_at = now() + greatest(coalesce(i.delay_ms, 0), 0) * interval '1 millisecond',
      output = CASE WHEN i.kind = 'ok' THEN coalesce(i.output, '{}'::jsonb) ELSE r.output END,
      cost = r.cost + coalesce(i.cost, 0),
      error_class = CASE WHEN i.kind IN ('ok', 'release') THEN NULL ELSE i.class END,
      error_message = CASE WHEN i.kind IN ('ok', 'release') THEN NULL ELSE i.message END,
      lease_owner = NULL, lease_expires_at = NULL,
      finished_at = CASE WHEN i.kind IN ('ok', 'fail')
                           OR (i.kind IN ('retry', 'lost')
                               AND r.failed_attempts + 1 > r.max_retries)
                         THEN now() END,
      updated_at = now()
      FROM input i
     WHERE r.id = i.run_id AND r.state = 'running' AND r.lease_owner = i.worker
       AND r.attempt = i.attempt
    RETURNING r.id, r.task_id, r.stage, r.attempt, i.kind, r.state, r.optional, r.output,
              coalesce(i.cost, 0) AS cost, i.class, i.message,
              i.kind IN ('retry', 'lost', 'fail') AS counted
  )
  SELECT coalesce(array_agg(ROW(a.*)::spool_applied_outcome ORDER BY a.id), '{}')
    INTO v_applied FROM applied a;

  -- Close the attempts.
  UPDATE stage_attempts a SET
    finished_at = now(),
    outcome = CASE
      WHEN x.kind = 'ok' THEN 'ok'
      WHEN x.new_state = 'failed' THEN 'failed'
      WHEN x.kind = 'snooze' THEN 'snoozed'
      WHEN x.kind = 'release' THEN 'released'
      ELSE x.kind END,
    error_class = x.class, error_message = x.message, cost = x.cost
    FROM unnest(v_applied) x
   WHERE a.stage_run_id = x.id AND a.attempt = x.attempt;

  -- Immediate retries and releases rejoin the queue now.
  SELECT array_agg(x.id ORDER BY x.id) INTO v_rejoin
    FROM unnest(v_applied) x WHERE x.new_state = 'ready';
  PERFORM spool_make_ready(coalesce(v_rejoin, '{}'), true);

  -- Dependencies: a done run, or a failed optional one, resolves its inputs.
  WITH resolved AS (
    SELECT x.task_id, x.stage FROM unnest(v_applied) x
     WHERE x.new_state = 'done' OR (x.new_state = 'failed' AND x.optional)
  ), hits AS (
    SELECT d.id, count(*) AS n
      FROM resolved JOIN stage_runs d
        ON d.task_id = resolved.task_id AND resolved.stage = ANY (d.depends_on)
     WHERE d.state = 'blocked'
     GROUP BY d.id
  ), dec AS (
    UPDATE stage_runs d SET deps_pending = d.deps_pending - hits.n, updated_at = now()
      FROM hits WHERE d.id = hits.id
    RETURNING d.id, d.deps_pending
  )
  SELECT array_agg(dec.id ORDER BY dec.id) INTO v_ready FROM dec WHERE dec.deps_pending <= 0;
  PERFORM spool_make_ready(coalesce(v_ready, '{}'), false);

  -- A failed required run fails its task; what has not started is skipped.
  UPDATE stage_runs r SET state = 'skipped', updated_at = now(), finished_at = now()
   WHERE r.task_id IN (SELECT x.task_id FROM unnest(v_applied) x
                        WHERE x.new_state = 'failed' AND NOT x.optional)
     AND r.state IN ('blocked', 'ready', 'scheduled');

  -- Task bookkeeping: cost, retries, media, state. Counters instead of a
  -- look at the task's other runs: the row lock on the task serializes
  -- concurrent outcomes, and the one that finishes the last run sees 0.
  WITH per_task AS (
    SELECT x.task_id, sum(x.cost) AS cost, count(*) FILTER (WHERE x.counted) AS retries,
           count(*) FILTER (WHERE x.new_state IN ('done', 'failed')) AS finished,
           count(*) FILTER (WHERE x.new_state = 'failed' AND x.optional) AS optional_failed,
           bool_or(x.new_state = 'failed' AND NOT x.optional) AS failed,
           (array_agg(x.output -> 'video_url' ORDER BY x.id)
              FILTER (WHERE x.new_state = 'done' AND x.output ? 'video_url'))[1] AS video_url,
           (array_agg(x.output -> 'storyboard' ORDER BY x.id)
              FILTER (WHERE x.new_state = 'done' AND x.output ? 'storyboard'))[1] AS storyboard,
           (array_agg(x.stage || ': ' || coalesce(x.message, x.class, 'failed') ORDER BY x.id)
              FILTER (WHERE x.kind <> 'ok' AND x.kind <> 'release'))[1] AS error
      FROM unnest(v_applied) x GROUP BY x.task_id ORDER BY x.task_id
  )
  UPDATE tasks t SET
    actual_cost = t.actual_cost + p.cost,
    retry_count = t.retry_count + p.retries,
    runs_pending = t.runs_pending - p.finished,
    optional_failed = t.optional_failed + p.optional_failed,
    video_url = coalesce(p.video_url #>> '{}', t.video_url),
    storyboard_data = coalesce(p.storyboard, t.storyboard_data),
    error_message = coalesce(p.error, t.error_message),
    state = (CASE
      WHEN t.state IN ('completed', 'partially_completed', 'failed', 'cancelled') THEN t.state::text
      WHEN p.failed THEN 'failed'
      WHEN t.runs_pending - p.finished > 0 THEN t.state::text
      WHEN t.optional_failed + p.optional_failed > 0 THEN 'partially_completed'
      ELSE 'completed' END)::spool_task_state,
    finished_at = CASE
      WHEN t.finished_at IS NULL AND (p.failed OR t.runs_pending - p.finished <= 0) THEN now()
      ELSE t.finished_at END,
    updated_at = now()
    FROM per_task p WHERE t.id = p.task_id;

  RETURN QUERY
  SELECT i.run_id, x.id IS NOT NULL, coalesce(x.new_state, r.state)
    FROM unnest(p_runs) WITH ORDINALITY AS i(run_id, ord)
    LEFT JOIN unnest(v_applied) x ON x.id = i.run_id
    LEFT JOIN stage_runs r ON r.id = i.run_id
   ORDER BY i.ord;
END $$;

-- Returns runs whose lease expired to the queue (the attempt counts; past the
-- retry limit they fail). Safe to run from every worker at once.
CREATE OR REPLACE FUNCTION spool_rescue(p_limit INTEGER)
RETURNS TABLE (run_id BIGINT, accepted BOOLEAN, state spool_run_state)
LANGUAGE plpgsql AS $$
DECLARE
  v_workers TEXT[]; v_runs BIGINT[]; v_attempts INTEGER[]; v_n INTEGER;
BEGIN
  SELECT array_agg(e.lease_owner), array_agg(e.id), array_agg(e.attempt), count(*)
    INTO v_workers, v_runs, v_attempts, v_n
    FROM (SELECT r.id, r.lease_owner, r.attempt FROM stage_runs r
           WHERE r.state = 'running' AND r.lease_expires_at < now()
           ORDER BY r.lease_expires_at LIMIT p_limit
             FOR UPDATE SKIP LOCKED) e;
  IF v_n = 0 THEN
    RETURN;
  END IF;
  RETURN QUERY SELECT * FROM spool_record_outcomes(
    v_workers, v_runs, v_attempts, array_fill('lost'::TEXT, ARRAY[v_n]),
    array_fill(0::BIGINT, ARRAY[v_n]), array_fill(NULL::JSONB, ARRAY[v_n]),
    array_fill(0::NUMERIC, ARRAY[v_n]), array_fill('lost'::TEXT, ARRAY[v_n]),
    array_fill('lease expired (worker stopped heartbeating)'::TEXT, ARRAY[v_n]));
END $$;

-- Heartbeat: extends every lease the worker holds; returns how many.
CREATE OR REPLACE FUNCTION spool_heartbeat(p_worker TEXT, p_lease_ms BIGINT)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
  v_n INTEGER;
BEGIN
  UPDATE stage_runs SET lease_expires_at = now() + p_lease_ms * interval '1 millisecond'
   WHERE lease_owner = p_worker AND state = 'running';
  GET DIAGNOSTICS v_n = ROW_COUNT;
  UPDATE workers SET last_heartbeat = now() WHERE id = p_worker;
  RETURN v_n;
END $$;

-- Changes a task's priority; everything not yet claimed follows it.
CREATE OR REPLACE FUNCTION spool_set_priority(p_task BIGINT, p_priority spool_priority)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
  v_ready BIGINT[];
BEGIN
  UPDATE tasks SET priority = p_priority, updated_at = now() WHERE id = p_task;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  WITH moved AS (
    UPDATE stage_runs r SET priority = p_priority, updated_at = now()
     WHERE r.task_id = p_task AND r.state IN ('blocked', 'scheduled', 'ready')
       AND r.priority <> p_priority
    RETURNING r.id, r.state
  )
  SELECT array_agg(moved.id ORDER BY moved.id) INTO v_ready FROM moved WHERE moved.state = 'ready';
  PERFORM spool_make_ready(coalesce(v_ready, '{}'), false);
  RETURN true;
END $$;

-- Cancels a task: queued runs are cancelled, running ones lose their lease
-- (their late outcomes are refused) and their workers are told through
-- NOTIFY spool_cancel (payload: run id) to stop them.
CREATE OR REPLACE FUNCTION spool_cancel(p_task BIGINT)
RETURNS TABLE (run_id BIGINT, was_running BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
  v_ids BIGINT[];
  v_running BOOLEAN[];
BEGIN
  PERFORM 1 FROM tasks WHERE id = p_task FOR UPDATE;
  UPDATE tasks SET state = 'cancelled', updated_at = now(), finished_at = now()
   WHERE id = p_task AND state NOT IN ('completed', 'partially_completed', 'failed', 'cancelled');
  WITH before AS (
    SELECT r.id, r.state, r.attempt FROM stage_runs r
     WHERE r.task_id = p_task AND r.state IN ('blocked', 'scheduled', 'ready', 'running')
       FOR UPDATE
  ), cancelled AS (
    UPDATE stage_runs r SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                            updated_at = now(), finished_at = now()
      FROM before b WHERE r.id = b.id
    RETURNING r.id, b.state = 'running' AS was_running, b.attempt
  ), closed AS (
    UPDATE stage_attempts a SET finished_at = now(), outcome = 'cancelled'
      FROM cancelled c WHERE c.was_running AND a.stage_run_id = c.id AND a.attempt = c.attempt
  )
  SELECT array_agg(c.id ORDER BY c.id), array_agg(c.was_running ORDER BY c.id)
    INTO v_ids, v_running FROM cancelled c;
  PERFORM pg_notify('spool_cancel', x.id::text)
     FROM unnest(v_ids, v_running) AS x(id, running) WHERE x.running;
  RETURN QUERY SELECT x.id, x.running FROM unnest(v_ids, v_running) AS x(id, running);
END $$;
