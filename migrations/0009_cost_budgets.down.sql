-- 0009_cost_budgets down: estimates per run, reservations, budgets, spend and
-- cost events are lost. The repeatable R_*.sql files of this version use
-- them: as after 0006's down, the queue is not usable until the next
-- `migrate up`.
DROP FUNCTION IF EXISTS spool_sync_budgets(JSONB);
DROP FUNCTION IF EXISTS spool_budget_day(TIMESTAMPTZ);
DROP FUNCTION IF EXISTS spool_budget_admit(BIGINT[], NUMERIC[], TEXT);
DROP FUNCTION IF EXISTS spool_budget_outcomes(NUMERIC[], NUMERIC[], TIMESTAMPTZ[], BOOLEAN[],
  TEXT[], TEXT[], BIGINT[], TEXT[], TEXT[], NUMERIC[]);
DROP FUNCTION IF EXISTS spool_cost_report(DATE, TEXT);
DELETE FROM spool_provider_events
 WHERE kind IN ('cost_overrun', 'budget_warning', 'budget_exhausted');
DROP INDEX IF EXISTS spool_provider_events_task_idx;
ALTER TABLE spool_provider_events DROP CONSTRAINT IF EXISTS spool_provider_events_kind_check;
ALTER TABLE spool_provider_events ADD CONSTRAINT spool_provider_events_kind_check
  CHECK (kind IN ('breaker_opened', 'breaker_half_open', 'breaker_closed', 'paused',
                  'quota_warning', 'quota_exhausted'));
ALTER TABLE spool_provider_events DROP COLUMN IF EXISTS task_id;
DROP VIEW IF EXISTS spool_money;
DROP TABLE IF EXISTS spool_spend;
DROP TABLE IF EXISTS spool_budgets;
ALTER TABLE tasks DROP COLUMN IF EXISTS overrun_at;
ALTER TABLE stage_runs DROP COLUMN IF EXISTS reserved_client;
ALTER TABLE stage_runs DROP COLUMN IF EXISTS reserved_day;
ALTER TABLE stage_runs DROP COLUMN IF EXISTS reserved;
ALTER TABLE stage_runs DROP COLUMN IF EXISTS est_cost;
