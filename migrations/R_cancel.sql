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
