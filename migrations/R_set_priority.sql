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
  PERFORM spool_notify_tasks(ARRAY[p_task]);
  RETURN true;
END $$;
