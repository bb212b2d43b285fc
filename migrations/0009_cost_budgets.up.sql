-- 0009_cost_budgets up: estimates per stage run, budget reservations, daily
-- spend, budgets, and cost events.
--
-- stage_runs.est_cost: the run's estimate for one call, from its stage's
--   price model and the task's payload when the task was enqueued (0: free).
-- stage_runs.reserved, reserved_day, reserved_client: what the run's current
--   (or last) claim reserved of the hard budget, the budget day it was
--   reserved on (the day's start), and whether it was also reserved on the task's client's
--   row; NULL/false: nothing reserved. Kept after the outcome, which gives
--   the reservation back (a later claim writes its own); spool_cancel clears
--   it when it gives it back.
-- tasks.overrun_at: when the task's actual cost first passed its estimate
--   times budgets.overrun_factor (a cost_overrun event fired then); NULL:
--   never.
-- spool_budgets: the limits a worker's configuration sets (store::
--   sync_budgets). The row 'total' holds the day (time_zone, reset_at; day_s
--   its length, shorter than a day only in tests), the
--   overrun factor, the cluster's soft and hard budgets (NULL: none), the
--   stages whose claims wait for reservations to come back, whether any
--   client has a hard budget (client_hard) and the budget day the last
--   admission was in (day_start, day_end; NULL: work it out); a row
--   'client:<id>' holds one client's budgets.
-- spool_spend and the view spool_money: per budget day (day: its start) and
--   scope, the USD spent (actual cost reported by outcomes) and reserved (by
--   claims of paid runs in flight). Scopes: 'total', 'client:<id>',
--   'campaign:<id>', 'provider:<name>', 'stage:<name>'; reservations are
--   kept for 'total' and clients with a hard budget. Claims and outcomes
--   write apart, so that a claim never waits for an outcome's commit: claims
--   add to the reserved counter of the budget row they lock
--   (spool_budgets.reserved, for the day reserved_day; hard_logged_day makes
--   the day's budget_exhausted event happen once); outcomes, rescues and
--   cancels add what they spend to spool_spend.spent and the reservations
--   they give back to spool_spend.released (soft_warned: the day's
--   budget_warning fired). What is reserved now is reserved - released
--   (spool_money). A claim reads the spend rows without waiting: an outcome
--   it cannot see yet still counts as reserved.
ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS est_cost NUMERIC(14, 6) NOT NULL DEFAULT 0;
ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS reserved NUMERIC(14, 6);
ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS reserved_day TIMESTAMPTZ;
ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS reserved_client BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS overrun_at TIMESTAMPTZ;

CREATE TABLE IF NOT EXISTS spool_budgets (
  scope          TEXT PRIMARY KEY CHECK (scope = 'total' OR scope LIKE 'client:_%'),
  soft_usd       NUMERIC(14, 6) CHECK (soft_usd > 0),
  hard_usd       NUMERIC(14, 6) CHECK (hard_usd > 0),
  time_zone      TEXT NOT NULL DEFAULT 'UTC',
  reset_at       TIME NOT NULL DEFAULT '00:00',
  overrun_factor FLOAT8 NOT NULL DEFAULT 1.2 CHECK (overrun_factor >= 1),
  day_s          FLOAT8 NOT NULL DEFAULT 86400 CHECK (day_s > 0 AND day_s <= 86400),
  waiting_stages TEXT[] NOT NULL DEFAULT '{}',
  client_hard    BOOLEAN NOT NULL DEFAULT false,
  reserved       NUMERIC(14, 6) NOT NULL DEFAULT 0,
  reserved_day   TIMESTAMPTZ,
  hard_logged_day TIMESTAMPTZ,
  day_start      TIMESTAMPTZ,
  day_end        TIMESTAMPTZ,
  updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The defaults of a configuration that says nothing, until a worker writes
-- its own.
INSERT INTO spool_budgets (scope, soft_usd, hard_usd) VALUES ('total', 100, 150)
ON CONFLICT (scope) DO NOTHING;

CREATE TABLE IF NOT EXISTS spool_spend (
  day         TIMESTAMPTZ NOT NULL,
  scope       TEXT NOT NULL,
  spent       NUMERIC(14, 6) NOT NULL DEFAULT 0,
  released    NUMERIC(14, 6) NOT NULL DEFAULT 0,
  soft_warned BOOLEAN NOT NULL DEFAULT false,
  PRIMARY KEY (day, scope)
);
-- (Each day's spend, with what the budget rows say is reserved on the day
-- they count; a day nothing was spent on yet shows its reservations alone.)
CREATE OR REPLACE VIEW spool_money AS
SELECT s.day, s.scope, s.spent,
       CASE WHEN b.reserved_day = s.day THEN greatest(b.reserved - s.released, 0) ELSE 0 END
         AS reserved
  FROM spool_spend s LEFT JOIN spool_budgets b ON b.scope = s.scope
UNION ALL
SELECT b.reserved_day, b.scope, 0, b.reserved
  FROM spool_budgets b
 WHERE b.reserved_day IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM spool_spend s WHERE s.day = b.reserved_day AND s.scope = b.scope);

-- Cost events go where provider events go (one log, taken once by one
-- worker): the provider column names their subject ('total',
-- 'client:<id>', 'task:<id>'), task_id the task of a cost_overrun.
ALTER TABLE spool_provider_events ADD COLUMN IF NOT EXISTS task_id BIGINT;
ALTER TABLE spool_provider_events DROP CONSTRAINT IF EXISTS spool_provider_events_kind_check;
ALTER TABLE spool_provider_events ADD CONSTRAINT spool_provider_events_kind_check
  CHECK (kind IN ('breaker_opened', 'breaker_half_open', 'breaker_closed', 'paused',
                  'quota_warning', 'quota_exhausted', 'cost_overrun', 'budget_warning',
                  'budget_exhausted'));
CREATE INDEX IF NOT EXISTS spool_provider_events_task_idx
  ON spool_provider_events (task_id) WHERE task_id IS NOT NULL;
