-- Hands the provider events no worker has logged yet to p_worker (at most
-- p_limit, oldest first) and marks them logged by it: each event is logged
-- by exactly one worker. Concurrent callers skip each other's rows. task_id:
-- the task of a cost_overrun (NULL for the others).
DROP FUNCTION IF EXISTS spool_take_provider_events(TEXT, INTEGER);
CREATE FUNCTION spool_take_provider_events(p_worker TEXT, p_limit INTEGER DEFAULT 100)
RETURNS TABLE (id BIGINT, provider TEXT, at TIMESTAMPTZ, kind TEXT, message TEXT,
               task_id BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY
  WITH taken AS (
    UPDATE spool_provider_events e SET logged_by = p_worker
     WHERE e.id IN (SELECT u.id FROM spool_provider_events u WHERE u.logged_by IS NULL
                     ORDER BY u.id LIMIT p_limit FOR UPDATE SKIP LOCKED)
       AND e.logged_by IS NULL
    RETURNING e.id, e.provider, e.at, e.kind, e.message, e.task_id
  )
  SELECT t.id, t.provider, t.at, t.kind, t.message, t.task_id FROM taken t ORDER BY t.id;
END $$;
