-- Claims up to p_limit ready runs of a stage for p_worker, in fair order,
-- with a lease of p_lease_ms and the lease token p_token (a number the
-- claiming worker process never hands out twice). Each claim counts a new
-- attempt number and opens its stage_attempts row; (worker, attempt, token)
-- fences every outcome. The task row is left alone (claims stay cheap): a
-- task turns running with its first outcome.
--
-- The first statement picks and locks the runs: per priority, in order, an
-- ordered walk of stage_runs_claim_idx from the remembered head (see
-- R_fair_order.sql) that stops once p_limit runs are found. The second works on
-- exactly those ids. Every plan is right whatever p_limit and the table
-- statistics are, so each is planned once per session (plan_cache_mode) and
-- never as a table scan (enable_seqscan: statistics taken while a table was
-- nearly empty must not turn a lookup into a scan of what it has grown to).
-- The run's max_retries comes back with it: the retry limit is fixed when the
-- task is enqueued, so a worker decides a failed attempt with the run's copy.
DROP FUNCTION IF EXISTS spool_claim(TEXT, INTEGER, TEXT, BIGINT, BIGINT);
CREATE FUNCTION spool_claim(p_stage TEXT, p_limit INTEGER, p_worker TEXT,
                                       p_lease_ms BIGINT, p_token BIGINT)
RETURNS TABLE (run_id BIGINT, task_id BIGINT, stage TEXT, attempt INTEGER,
               failed_attempts INTEGER, lost_attempts INTEGER, snoozed_ms BIGINT,
               max_retries INTEGER, channel_id TEXT, priority spool_priority, payload JSONB, inputs JSONB)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
  v_hints JSONB;
  v_rescan BOOLEAN;
  v_from BIGINT[];
  v_heads BIGINT[];
  v_ids BIGINT[];
  v_new JSONB := '{}';
  v_drained BOOLEAN;
BEGIN
  -- A claim lost in a server crash only puts the run back in the queue; the
  -- worker's later outcome is then refused by the fence (a re-claim by the
  -- same worker at the same attempt number carries a new token), and its
  -- heartbeat learns that it lost the run. So claims need not wait for their
  -- commit to reach disk; outcomes do.
  PERFORM set_config('synchronous_commit', 'off', true);
  IF EXISTS (SELECT 1 FROM stage_runs r
              WHERE r.stage = p_stage AND r.state = 'scheduled' AND r.ready_at <= now()) THEN
    PERFORM spool_promote(p_stage, 1000);
  END IF;
  v_hints := spool_fair_hints();
  -- Once a second, from the front: runs that landed behind a remembered head.
  v_rescan := coalesce((v_hints ->> (p_stage || '/rescan'))::float8, 0)
              < extract(epoch FROM now()) - 1;
  v_from := CASE WHEN v_rescan THEN '{0,0,0}'::BIGINT[] ELSE ARRAY[
              coalesce((v_hints ->> (p_stage || '/high'))::bigint, 0),
              coalesce((v_hints ->> (p_stage || '/normal'))::bigint, 0),
              coalesce((v_hints ->> (p_stage || '/low'))::bigint, 0)] END;
  SELECT array_agg(p.id),
         ARRAY[min(p.fair_round) FILTER (WHERE p.priority = 'high'),
               min(p.fair_round) FILTER (WHERE p.priority = 'normal'),
               min(p.fair_round) FILTER (WHERE p.priority = 'low')]
    INTO v_ids, v_heads
    FROM (
      SELECT * FROM (
        SELECT r.id, r.priority, r.fair_round FROM stage_runs r
         WHERE r.stage = p_stage AND r.priority = 'high' AND r.state = 'ready'
           AND r.fair_round >= v_from[1]
         ORDER BY r.fair_round, r.fair_seq LIMIT p_limit FOR UPDATE SKIP LOCKED) h
      UNION ALL -- run in order, and only as far as the LIMIT below needs
      SELECT * FROM (
        SELECT r.id, r.priority, r.fair_round FROM stage_runs r
         WHERE r.stage = p_stage AND r.priority = 'normal' AND r.state = 'ready'
           AND r.fair_round >= v_from[2]
         ORDER BY r.fair_round, r.fair_seq LIMIT p_limit FOR UPDATE SKIP LOCKED) n
      UNION ALL
      SELECT * FROM (
        SELECT r.id, r.priority, r.fair_round FROM stage_runs r
         WHERE r.stage = p_stage AND r.priority = 'low' AND r.state = 'ready'
           AND r.fair_round >= v_from[3]
         ORDER BY r.fair_round, r.fair_seq LIMIT p_limit FOR UPDATE SKIP LOCKED) l
      LIMIT p_limit) p;
  -- Remember the heads that moved (most claims stay within a round).
  IF v_rescan OR v_heads[1] <> v_from[1] OR v_heads[2] <> v_from[2]
     OR v_heads[3] <> v_from[3] THEN
    v_drained := coalesce(cardinality(v_ids), 0) < p_limit;
    FOR i IN REVERSE 3..1 LOOP
      IF v_heads[i] IS NOT NULL THEN
        v_drained := true; -- the priorities before this one were walked to the end
      ELSIF v_rescan AND v_drained THEN
        -- Nothing ready: whatever comes starts at the highest round handed out.
        v_heads[i] := (SELECT max(c.last_round) FROM stage_fair_channels c
                        WHERE c.stage = p_stage
                          AND c.priority = (enum_range(NULL::spool_priority))[i]);
      END IF;
      IF v_heads[i] IS NOT NULL THEN
        v_new := v_new || jsonb_build_object(
          p_stage || '/' || (enum_range(NULL::spool_priority))[i]::text, v_heads[i]);
      END IF;
    END LOOP;
    IF v_rescan THEN
      v_new := v_new || jsonb_build_object(p_stage || '/rescan', extract(epoch FROM now()));
    END IF;
    PERFORM set_config('spool.fair_hints', (v_hints || v_new)::text, false);
  END IF;
  IF v_ids IS NULL THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH claimed AS (
    UPDATE stage_runs r
       SET state = 'running', attempt = r.attempt + 1, lease_owner = p_worker,
           lease_token = p_token, lease_expires_at = now() + p_lease_ms * interval '1 millisecond',
           claimed_at = now(), updated_at = now()
     WHERE r.id = ANY (v_ids)
    RETURNING r.id, r.task_id, r.stage, r.attempt, r.failed_attempts, r.lost_attempts,
              r.snoozed_ms, r.max_retries, r.channel_id, r.priority, r.depends_on, r.fair_round, r.fair_seq
  ), opened AS (
    INSERT INTO stage_attempts (stage_run_id, task_id, stage, attempt, worker_id)
    SELECT c.id, c.task_id, c.stage, c.attempt, p_worker FROM claimed c
  )
  SELECT c.id, c.task_id, c.stage, c.attempt, c.failed_attempts, c.lost_attempts,
         c.snoozed_ms, c.max_retries, c.channel_id, c.priority, t.payload,
         CASE WHEN cardinality(c.depends_on) = 0 THEN '{}'::jsonb ELSE
           (SELECT coalesce(jsonb_object_agg(u.stage, u.output), '{}'::jsonb)
              FROM stage_runs u
             WHERE u.task_id = c.task_id AND u.stage = ANY (c.depends_on)
               AND u.output IS NOT NULL)
         END
    FROM claimed c JOIN tasks t ON t.id = c.task_id
   ORDER BY c.priority, c.fair_round, c.fair_seq;
END $$;
