-- 0003_hardening: what a worker and the database must agree on.
--
-- lease_token: the claim that holds a run, a number the claiming worker
--   process never hands out twice. A claim lost in a server crash (claims
--   commit asynchronously) can be re-made by the same worker at the same
--   attempt number; the token still differs, so the two executions never
--   share a fence. NULL while nobody holds the run.
-- lost_attempts / max_lost: leases lost because a worker died or stalled
--   count apart from provider failures (failed_attempts), with their own
--   limit, which still stops a run that crashes every worker taking it.
-- snoozed_ms: time the run spent snoozed (rate limited) so far, each snooze
--   counting at least a second; past the stage's cap it fails with class
--   rate_limited.
-- workers.stages / lease_ms: what a worker serves and how long its leases
--   last, so that `spool status` can tell stale workers and unserved stages.

ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS lease_token BIGINT;
ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS lost_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS max_lost INTEGER NOT NULL DEFAULT 5;
ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS snoozed_ms BIGINT NOT NULL DEFAULT 0;

ALTER TABLE workers ADD COLUMN IF NOT EXISTS stages TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE workers ADD COLUMN IF NOT EXISTS lease_ms BIGINT NOT NULL DEFAULT 30000;

-- The queue functions live in the repeatable R_*.sql files from here on,
-- applied after the versioned migrations whenever they change. These
-- signatures changed (claims carry a lease token, outcomes are fenced by it,
-- the heartbeat names the claims it extends): the old ones go.
DROP FUNCTION IF EXISTS spool_heartbeat(TEXT, BIGINT);
DROP FUNCTION IF EXISTS spool_record_outcomes(TEXT[], BIGINT[], INTEGER[], TEXT[], BIGINT[],
  JSONB[], NUMERIC[], TEXT[], TEXT[], BIGINT[], BIGINT[]);
DROP FUNCTION IF EXISTS spool_claim(TEXT, INTEGER, TEXT, BIGINT);
