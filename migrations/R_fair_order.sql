-- The fair order: rounds per channel, virtual time, remembered heads, and
-- making runs ready in that order.
--
-- Fair order. A run that becomes ready gets a round (fair_round) and a global
-- readiness sequence number (fair_seq). Claims take ready runs ordered by
-- (priority, fair_round, fair_seq) straight off a partial index, so a claim's
-- cost depends on its size, not on the backlog. The k-th run a channel has
-- queued at once gets round max(last_round + 1, V), where V, the stage's
-- virtual time, is the round at the head of the ready queue (or, with nothing
-- ready, the highest round handed out). So channels alternate round by round,
-- a channel with 1,000 queued cannot starve one with 2, and a channel that
-- appears mid-stream joins the current round. Runs that come back (retry,
-- snooze, rescue, release) rejoin at V: they do not queue behind their
-- channel's backlog again.
--
-- Where the head is. Claimed runs leave dead entries at the front of
-- stage_runs_claim_idx until VACUUM removes them; a scan from the front walks
-- every one (at 30,000 claims a second, about 150 index pages a second). But
-- the head only moves forward: a run that becomes ready gets a round of at
-- least V, and V is the head. So each session remembers, per stage and
-- priority, the last head it saw (the GUC spool.fair_hints, a JSON object)
-- and claims and virtual times scan from there. A run can land behind a
-- remembered head only when its writer read V just before a concurrent claim
-- moved the head, or when the claim that held it rolls back after others
-- skipped it (SKIP LOCKED). So once a second a session's claim scans from the
-- front again: such a run waits at most that long. (A virtual time read past
-- such a run places new runs a little later; nothing waits on that.)

-- This session's remembered heads: {"<stage>/<priority>": round, ...}.
CREATE OR REPLACE FUNCTION spool_fair_hints()
RETURNS JSONB LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('spool.fair_hints', true), '')::jsonb, '{}'::jsonb)
$$;

-- The round a scan of (stage, priority) may start from (0: the front).
CREATE OR REPLACE FUNCTION spool_fair_hint(p_stage TEXT, p_priority spool_priority)
RETURNS BIGINT LANGUAGE sql STABLE AS $$
  SELECT coalesce((spool_fair_hints() ->> (p_stage || '/' || p_priority::text))::bigint, 0)
$$;

-- (PL/pgSQL rather than SQL: a SQL function with subqueries is not inlined
-- and is planned again at every call of the statement that calls it; this
-- one's plans are kept for the session.)
CREATE OR REPLACE FUNCTION spool_virtual_time(p_stage TEXT, p_priority spool_priority)
RETURNS BIGINT LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN coalesce(
    (SELECT r.fair_round FROM stage_runs r
      WHERE r.stage = p_stage AND r.priority = p_priority AND r.state = 'ready'
        AND r.fair_round >= spool_fair_hint(p_stage, p_priority)
      ORDER BY r.fair_round, r.fair_seq LIMIT 1),
    (SELECT max(c.last_round) FROM stage_fair_channels c
      WHERE c.stage = p_stage AND c.priority = p_priority),
    0);
END $$;

-- Places new entries at the back of their channels' queues: the k-th of a
-- (stage, priority, channel) in p_stages/p_prios/p_channels order gets round
-- max(last_round + 1, V) + k - 1. Creates, locks and advances the channels'
-- counters; returns the rounds in input order.
CREATE OR REPLACE FUNCTION spool_fair_rounds(p_stages TEXT[], p_prios spool_priority[],
                                             p_channels TEXT[])
RETURNS BIGINT[] LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$ -- (as spool_enqueue's, R_enqueue.sql)
DECLARE
  v_stages TEXT[];
  v_prios spool_priority[];
  v_times BIGINT[];
  v_rounds BIGINT[];
BEGIN
  INSERT INTO stage_fair_channels (stage, priority, channel_id)
  SELECT DISTINCT x.stage, x.priority, x.channel_id
    FROM unnest(p_stages, p_prios, p_channels) AS x(stage, priority, channel_id)
   ORDER BY 1, 2, 3
  ON CONFLICT DO NOTHING;
  -- Lock the channels' counters in one order: concurrent writers queue up
  -- instead of handing out the same rounds (or deadlocking).
  PERFORM 1 FROM stage_fair_channels c
   WHERE (c.stage, c.priority, c.channel_id) IN
         (SELECT * FROM unnest(p_stages, p_prios, p_channels))
   ORDER BY c.stage, c.priority, c.channel_id
     FOR UPDATE;
  SELECT v.stages, v.prios, v.times INTO v_stages, v_prios, v_times
    FROM spool_virtual_times(p_stages, p_prios) v;
  WITH items AS (
    SELECT x.ord, x.stage, x.priority, x.channel_id,
           row_number() OVER (PARTITION BY x.stage, x.priority, x.channel_id ORDER BY x.ord) AS k
      FROM unnest(p_stages, p_prios, p_channels) WITH ORDINALITY
           AS x(stage, priority, channel_id, ord)
  ), groups AS (
    SELECT g.stage, g.priority, g.channel_id, g.n, greatest(c.last_round + 1, v.t) AS start
      FROM (SELECT stage, priority, channel_id, count(*) AS n FROM items GROUP BY 1, 2, 3) g
      JOIN stage_fair_channels c USING (stage, priority, channel_id)
      JOIN unnest(v_stages, v_prios, v_times) AS v(stage, priority, t) USING (stage, priority)
  ), counters AS (
    UPDATE stage_fair_channels c SET last_round = g.start + g.n - 1
      FROM groups g
     WHERE c.stage = g.stage AND c.priority = g.priority AND c.channel_id = g.channel_id
  )
  SELECT array_agg(g.start + i.k - 1 ORDER BY i.ord) INTO v_rounds
    FROM items i JOIN groups g USING (stage, priority, channel_id);
  RETURN v_rounds;
END $$;

-- The virtual time of each (stage, priority) in the input, once, as three
-- parallel arrays; each is also the head this session remembers.
CREATE OR REPLACE FUNCTION spool_virtual_times(p_stages TEXT[], p_prios spool_priority[],
                                               OUT stages TEXT[], OUT prios spool_priority[],
                                               OUT times BIGINT[])
LANGUAGE plpgsql AS $$
BEGIN
  SELECT array_agg(g.stage), array_agg(g.priority),
         array_agg(spool_virtual_time(g.stage, g.priority))
    INTO stages, prios, times
    FROM (SELECT DISTINCT x.stage, x.priority
            FROM unnest(p_stages, p_prios) AS x(stage, priority)) g;
  IF stages IS NOT NULL THEN
    PERFORM set_config('spool.fair_hints',
                       (spool_fair_hints()
                        || (SELECT jsonb_object_agg(v.stage || '/' || v.priority, v.t)
                              FROM unnest(stages, prios, times) AS v(stage, priority, t)))::text,
                       false);
  END IF;
END $$;

-- Makes runs ready, placing them in the fair order. p_rejoin: runs coming
-- back (retry, rescue, release) rejoin at the virtual time; otherwise each
-- goes behind its channel's queued runs (in id order).
CREATE OR REPLACE FUNCTION spool_make_ready(p_ids BIGINT[], p_rejoin BOOLEAN)
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
  v_ids BIGINT[];
  v_stages TEXT[];
  v_prios spool_priority[];
  v_channels TEXT[];
  v_times BIGINT[];
BEGIN
  SELECT array_agg(r.id ORDER BY r.id), array_agg(r.stage ORDER BY r.id),
         array_agg(r.priority ORDER BY r.id), array_agg(r.channel_id ORDER BY r.id)
    INTO v_ids, v_stages, v_prios, v_channels
    FROM stage_runs r WHERE r.id = ANY (p_ids);
  IF v_ids IS NULL THEN
    RETURN;
  END IF;
  IF p_rejoin THEN
    SELECT v.stages, v.prios, v.times INTO v_stages, v_prios, v_times
      FROM spool_virtual_times(v_stages, v_prios) v;
    UPDATE stage_runs r
       SET state = 'ready', ready_at = now(), updated_at = now(),
           fair_round = v.t, fair_seq = nextval('spool_fair_seq')
      FROM unnest(v_stages, v_prios, v_times) AS v(stage, priority, t)
     WHERE r.id = ANY (v_ids) AND r.stage = v.stage AND r.priority = v.priority;
  ELSE
    UPDATE stage_runs r
       SET state = 'ready', ready_at = now(), updated_at = now(),
           fair_round = x.round, fair_seq = nextval('spool_fair_seq')
      FROM unnest(v_ids, spool_fair_rounds(v_stages, v_prios, v_channels)) AS x(id, round)
     WHERE r.id = x.id;
  END IF;
  PERFORM pg_notify('spool_wakeup', s.stage)
     FROM (SELECT DISTINCT x.stage FROM unnest(v_stages) AS x(stage)) s;
END $$;
