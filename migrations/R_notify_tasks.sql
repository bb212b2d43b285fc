-- Tells listeners (the client API's long polls and caches) which tasks
-- changed: NOTIFY spool_task with their ids, comma-separated, or '*' when
-- the list would not fit a notification (then every listener treats every
-- task as changed). One notification per call, sent at commit.
CREATE OR REPLACE FUNCTION spool_notify_tasks(p_ids BIGINT[])
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
  v_payload TEXT;
BEGIN
  IF p_ids IS NULL OR cardinality(p_ids) = 0 THEN
    RETURN;
  END IF;
  v_payload := array_to_string(p_ids, ',');
  IF length(v_payload) > 7000 THEN
    v_payload := '*';
  END IF;
  PERFORM pg_notify('spool_task', v_payload);
END $$;
