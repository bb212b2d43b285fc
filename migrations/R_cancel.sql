-- Cancels a task: queued runs are cancelled, running ones lose their lease
-- (their late outcomes are refused) and their workers are told through
-- NOTIFY spool_cancel (payload: run id) to stop them. A running run that a
-- provider admitted frees its slot at once: its stage gets a NOTIFY
-- spool_wakeup (a cancel is neutral to the provider's breaker), and its
-- budget reservation comes back.
CREATE OR REPLACE FUNCTION spool_cancel(p_task BIGINT)
RETURNS TABLE (run_id BIGINT, was_running BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
  v_ids BIGINT[];
  v_running BOOLEAN[];
  v_freed TEXT[];
  v_b_reserved NUMERIC[]; v_b_days TIMESTAMPTZ[]; v_b_clients BOOLEAN[]; v_b_stages TEXT[];
  v_b_providers TEXT[];
BEGIN
  PERFORM 1 FROM tasks WHERE id = p_task FOR UPDATE;
  UPDATE tasks SET state = 'cancelled', updated_at = now(), finished_at = now()
   WHERE id = p_task AND state NOT IN ('completed', 'partially_completed', 'failed', 'cancelled');
  WITH before AS (
    SELECT r.id, r.state, r.attempt, r.stage, r.provider, r.reserved, r.reserved_day,
           r.reserved_client FROM stage_runs r
     WHERE r.task_id = p_task AND r.state IN ('blocked', 'scheduled', 'ready', 'running')
       FOR UPDATE
  ), cancelled AS (
    UPDATE stage_runs r SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                            updated_at = now(), finished_at = now(),
                            reserved = CASE WHEN b.state = 'running' THEN NULL ELSE r.reserved END
      FROM before b WHERE r.id = b.id
    RETURNING r.id, b.state = 'running' AS was_running, b.attempt,
              CASE WHEN b.state = 'running' AND b.provider IS NOT NULL THEN b.stage END AS freed,
              CASE WHEN b.state = 'running' THEN b.reserved END AS reserved, b.reserved_day,
              b.reserved_client, b.stage, b.provider
  ), closed AS (
    UPDATE stage_attempts a SET finished_at = now(), outcome = 'cancelled'
      FROM cancelled c WHERE c.was_running AND a.stage_run_id = c.id AND a.attempt = c.attempt
  )
  SELECT array_agg(c.id ORDER BY c.id), array_agg(c.was_running ORDER BY c.id),
         array_agg(DISTINCT c.freed) FILTER (WHERE c.freed IS NOT NULL),
         array_agg(c.reserved) FILTER (WHERE c.reserved IS NOT NULL),
         array_agg(c.reserved_day) FILTER (WHERE c.reserved IS NOT NULL),
         array_agg(c.reserved_client) FILTER (WHERE c.reserved IS NOT NULL),
         array_agg(c.stage) FILTER (WHERE c.reserved IS NOT NULL),
         array_agg(c.provider) FILTER (WHERE c.reserved IS NOT NULL)
    INTO v_ids, v_running, v_freed, v_b_reserved, v_b_days, v_b_clients, v_b_stages,
         v_b_providers
    FROM cancelled c;
  -- A running run's reservation comes back now (its late outcome is refused).
  IF v_b_reserved IS NOT NULL THEN
    PERFORM spool_budget_outcomes(
      array_fill(0::numeric, ARRAY[cardinality(v_b_reserved)]), v_b_reserved, v_b_days,
      v_b_clients, v_b_stages, v_b_providers,
      array_fill(p_task, ARRAY[cardinality(v_b_reserved)]), '{}', '{}', '{}');
  END IF;
  PERFORM pg_notify('spool_cancel', x.id::text)
     FROM unnest(v_ids, v_running) AS x(id, running) WHERE x.running;
  PERFORM pg_notify('spool_wakeup', x.stage) FROM unnest(v_freed) AS x(stage);
  PERFORM spool_notify_tasks(ARRAY[p_task]);
  RETURN QUERY SELECT x.id, x.running FROM unnest(v_ids, v_running) AS x(id, running);
END $$;
