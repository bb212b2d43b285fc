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
