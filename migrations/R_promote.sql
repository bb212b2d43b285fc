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
