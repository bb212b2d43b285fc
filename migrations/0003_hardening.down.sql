-- 0003_hardening down. The queue functions that use these columns go too;
-- the repeatable R_*.sql files bring the current ones back with the next
-- `migrate up`, so between a down and an up the queue is not usable.
DROP FUNCTION IF EXISTS spool_heartbeat(TEXT, BIGINT, BIGINT[], INTEGER[], BIGINT[], BIGINT);
DROP FUNCTION IF EXISTS spool_rescue(INTEGER);
DROP FUNCTION IF EXISTS spool_record_outcomes(TEXT[], BIGINT[], INTEGER[], BIGINT[], TEXT[],
  BIGINT[], JSONB[], NUMERIC[], TEXT[], TEXT[], BIGINT[], BIGINT[]);
DROP FUNCTION IF EXISTS spool_claim(TEXT, INTEGER, TEXT, BIGINT, BIGINT);
DROP FUNCTION IF EXISTS spool_enqueue(TEXT[], TEXT[], TEXT[], TEXT[], JSONB[], TEXT[],
  NUMERIC[], JSONB);

ALTER TABLE workers DROP COLUMN IF EXISTS lease_ms;
ALTER TABLE workers DROP COLUMN IF EXISTS stages;
ALTER TABLE stage_runs DROP COLUMN IF EXISTS snoozed_ms;
ALTER TABLE stage_runs DROP COLUMN IF EXISTS max_lost;
ALTER TABLE stage_runs DROP COLUMN IF EXISTS lost_attempts;
ALTER TABLE stage_runs DROP COLUMN IF EXISTS lease_token;
