-- 0005_providers down: provider limits, their state, usage and events are
-- lost. The functions that use them go too; the repeatable R_*.sql files
-- bring the current ones back with the next `migrate up`, so between a down
-- and an up the queue is not usable.
DROP FUNCTION IF EXISTS spool_providers_status(INTEGER);
DROP FUNCTION IF EXISTS spool_provider_outcomes_needed(TEXT[], TEXT[], TEXT[], FLOAT8[]);
DROP FUNCTION IF EXISTS spool_outcome_tells(TEXT, TEXT, FLOAT8);
DROP FUNCTION IF EXISTS spool_provider_quiet(spool_providers);
DROP FUNCTION IF EXISTS spool_take_provider_events(TEXT, INTEGER);
DROP FUNCTION IF EXISTS spool_sync_providers(JSONB);
DROP FUNCTION IF EXISTS spool_provider_outcomes(TEXT[], TEXT[], TEXT[], TEXT[], BIGINT[],
  FLOAT8[], TIMESTAMPTZ[]);
DROP FUNCTION IF EXISTS spool_provider_waiting(TEXT, TEXT);
DROP FUNCTION IF EXISTS spool_provider_hold(TEXT, TEXT, TIMESTAMPTZ, FLOAT8);
DROP FUNCTION IF EXISTS spool_provider_prefix(TEXT, BIGINT[], INTEGER, FLOAT8);
DROP FUNCTION IF EXISTS spool_provider_quota_events(TEXT, TIMESTAMPTZ, TIMESTAMPTZ, FLOAT8);
DROP FUNCTION IF EXISTS spool_provider_charge(TEXT, TIMESTAMPTZ, INTEGER, FLOAT8, FLOAT8,
  TIMESTAMPTZ, TIMESTAMPTZ);
DROP FUNCTION IF EXISTS spool_provider_charge(TEXT, TIMESTAMPTZ, INTEGER, FLOAT8, FLOAT8,
  TIMESTAMPTZ, TIMESTAMPTZ, BIGINT);
DROP FUNCTION IF EXISTS spool_provider_charge(TEXT, TIMESTAMPTZ, INTEGER, FLOAT8, FLOAT8,
  TIMESTAMPTZ, TIMESTAMPTZ, BIGINT, FLOAT8);
DROP FUNCTION IF EXISTS spool_provider_running(TEXT, INTEGER);
DROP FUNCTION IF EXISTS spool_provider_admit(TEXT, INTEGER, TIMESTAMPTZ, FLOAT8);
DROP FUNCTION IF EXISTS spool_call_units(JSONB, TEXT, FLOAT8);
DROP FUNCTION IF EXISTS spool_quota_window(FLOAT8, TIME, TEXT, TIMESTAMPTZ);
DROP FUNCTION IF EXISTS spool_ms_until(TIMESTAMPTZ, TIMESTAMPTZ);
DROP FUNCTION IF EXISTS spool_ts_text(TIMESTAMPTZ);
DROP FUNCTION IF EXISTS spool_claim(TEXT, INTEGER, TEXT, BIGINT, BIGINT, TEXT, TEXT);
DROP FUNCTION IF EXISTS spool_cancel(BIGINT);
DROP FUNCTION IF EXISTS spool_record_outcomes(TEXT[], BIGINT[], INTEGER[], BIGINT[], TEXT[],
  BIGINT[], JSONB[], NUMERIC[], TEXT[], TEXT[], BIGINT[], BIGINT[]);

DROP INDEX IF EXISTS stage_runs_provider_idx;
ALTER TABLE stage_attempts DROP COLUMN IF EXISTS provider;
ALTER TABLE stage_runs DROP COLUMN IF EXISTS units_charged;
ALTER TABLE stage_runs DROP COLUMN IF EXISTS provider;
DROP TABLE IF EXISTS spool_provider_events;
DROP TABLE IF EXISTS spool_provider_usage;
DROP TABLE IF EXISTS spool_providers;
