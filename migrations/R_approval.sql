-- The approval gate's decisions. Both lock the task first (as spool_cancel
-- does) and return what happened:
--   approved / rejected: decided now;
--   already_approved: approved before (nothing changes);
--   finished: the task ended (completed, failed, cancelled): nothing to decide;
--   not_found.
-- spool_approve sets approved, readies the gated runs whose inputs are done
-- (spool_make_ready NOTIFYs their stages: workers claim at once) and moves an
-- awaiting_approval task back to running. A task may be approved before it
-- reaches the gate: its gated runs then start as soon as their inputs are done.
-- spool_reject cancels the task (spool_cancel: running runs are stopped) with
-- "rejected: <reason>" as its error.
DROP FUNCTION IF EXISTS spool_approve(BIGINT, TEXT, TEXT);
CREATE FUNCTION spool_approve(p_task BIGINT, p_by TEXT, p_note TEXT)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
  v_state spool_task_state;
  v_approved BOOLEAN;
  v_gated BIGINT[];
BEGIN
  SELECT t.state, t.approved INTO v_state, v_approved FROM tasks t WHERE t.id = p_task FOR UPDATE;
  IF NOT FOUND THEN
    RETURN 'not_found';
  END IF;
  IF v_approved THEN
    RETURN 'already_approved';
  END IF;
  IF v_state IN ('completed', 'partially_completed', 'failed', 'cancelled') THEN
    RETURN 'finished';
  END IF;
  UPDATE tasks SET approved = true, reviewed_at = now(), reviewed_by = p_by,
                   review_note = nullif(p_note, ''), updated_at = now(),
                   state = CASE WHEN state = 'awaiting_approval' THEN 'running' ELSE state END
   WHERE id = p_task;
  SELECT array_agg(r.id ORDER BY r.id) INTO v_gated FROM stage_runs r
   WHERE r.task_id = p_task AND r.state = 'blocked' AND r.needs_approval
     AND r.deps_pending <= 0;
  IF v_gated IS NOT NULL THEN
    PERFORM spool_make_ready(v_gated, false);
  END IF;
  PERFORM pg_notify('spool_approval', p_task::text);
  PERFORM spool_notify_tasks(ARRAY[p_task]);
  RETURN 'approved';
END $$;

DROP FUNCTION IF EXISTS spool_reject(BIGINT, TEXT, TEXT);
CREATE FUNCTION spool_reject(p_task BIGINT, p_by TEXT, p_reason TEXT)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
  v_state spool_task_state;
BEGIN
  SELECT t.state INTO v_state FROM tasks t WHERE t.id = p_task FOR UPDATE;
  IF NOT FOUND THEN
    RETURN 'not_found';
  END IF;
  IF v_state IN ('completed', 'partially_completed', 'failed', 'cancelled') THEN
    RETURN 'finished';
  END IF;
  PERFORM spool_cancel(p_task);
  UPDATE tasks SET reviewed_at = now(), reviewed_by = p_by, review_note = p_reason,
                   error_message = 'rejected: ' || p_reason, updated_at = now()
   WHERE id = p_task;
  PERFORM pg_notify('spool_approval', p_task::text);
  PERFORM spool_notify_tasks(ARRAY[p_task]);
  RETURN 'rejected';
END $$;
