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
CREATE OR REPLACE FUNCTION spool_heartbeat(p_worker TEXT, p_lease_ms BIGINT, p_runs BIGINT[],
                                           p_attempts INTEGER[], p_tokens BIGINT[],
                                           p_horizon BIGINT)
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
