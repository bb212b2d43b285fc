-- 0001_init: tasks (one per video), stage runs (one per task and stage),
-- attempts (one per claim of a stage run) and workers.
-- Statements are idempotent: a migration interrupted outside its transaction
-- (it never is; each runs in one) could be re-run safely.

DO $$ BEGIN
  CREATE TYPE spool_priority AS ENUM ('high', 'normal', 'low');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN
  CREATE TYPE spool_task_state AS ENUM ('queued', 'running', 'awaiting_approval',
    'completed', 'partially_completed', 'failed', 'cancelled');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

-- blocked: waits for upstream stages; scheduled: ready, but its ready_at lies
-- in the future (retry backoff, rate-limit snooze); ready: claimable now.
DO $$ BEGIN
  CREATE TYPE spool_run_state AS ENUM ('blocked', 'scheduled', 'ready', 'running',
    'done', 'failed', 'skipped', 'cancelled');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS tasks (
  id              BIGSERIAL PRIMARY KEY,
  client_id       TEXT NOT NULL DEFAULT '',
  campaign_id     TEXT NOT NULL DEFAULT '',
  channel_id      TEXT NOT NULL,
  priority        spool_priority NOT NULL DEFAULT 'normal',
  state           spool_task_state NOT NULL DEFAULT 'queued',
  payload         JSONB NOT NULL DEFAULT '{}'::jsonb
                  CHECK (jsonb_typeof(payload) = 'object'),
  storyboard_data JSONB,
  video_url       TEXT, -- a path or URL: media never lives in the database
  approved        BOOLEAN NOT NULL DEFAULT false,
  estimated_cost  NUMERIC(14, 6) NOT NULL DEFAULT 0,
  actual_cost     NUMERIC(14, 6) NOT NULL DEFAULT 0,
  retry_count     INTEGER NOT NULL DEFAULT 0,
  error_message   TEXT,
  -- stage runs not yet done or failed, and optional ones that failed: the
  -- outcome that brings runs_pending to 0 decides the final state
  runs_pending    INTEGER NOT NULL DEFAULT 0,
  optional_failed INTEGER NOT NULL DEFAULT 0,
  idempotency_key TEXT,
  created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at     TIMESTAMPTZ
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_idempotency_key_idx
  ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_state_idx ON tasks (state);
CREATE INDEX IF NOT EXISTS tasks_campaign_idx ON tasks (campaign_id);
CREATE INDEX IF NOT EXISTS tasks_client_idx ON tasks (client_id);
CREATE INDEX IF NOT EXISTS tasks_updated_at_idx ON tasks (updated_at);

CREATE TABLE IF NOT EXISTS stage_runs (
  id               BIGSERIAL PRIMARY KEY,
  task_id          BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  stage            TEXT NOT NULL,
  -- copied from the task so that claiming reads one index
  channel_id       TEXT NOT NULL,
  priority         spool_priority NOT NULL,
  state            spool_run_state NOT NULL,
  optional         BOOLEAN NOT NULL DEFAULT false,
  -- claims so far; with lease_owner it fences every outcome
  attempt          INTEGER NOT NULL DEFAULT 0,
  -- attempts that count toward the retry limit (not snoozes, not releases)
  failed_attempts  INTEGER NOT NULL DEFAULT 0,
  max_retries      INTEGER NOT NULL DEFAULT 3,
  -- dependency bookkeeping: upstream stages, and how many are not done yet
  depends_on       TEXT[] NOT NULL DEFAULT '{}',
  deps_pending     INTEGER NOT NULL DEFAULT 0,
  ready_at         TIMESTAMPTZ,
  -- fair order, assigned when the run becomes ready: round-robin round of its
  -- channel, then readiness sequence (see 0002_queue)
  fair_round       BIGINT,
  fair_seq         BIGINT,
  lease_owner      TEXT,
  lease_expires_at TIMESTAMPTZ,
  claimed_at       TIMESTAMPTZ,
  output           JSONB,
  error_class      TEXT,
  error_message    TEXT,
  cost             NUMERIC(14, 6) NOT NULL DEFAULT 0,
  created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at      TIMESTAMPTZ,
  UNIQUE (task_id, stage)
) WITH (fillfactor = 75); -- room for a claim's and an outcome's new row version on its page
-- The claim index: only ready runs, in claim order.
CREATE INDEX IF NOT EXISTS stage_runs_claim_idx
  ON stage_runs (stage, priority, fair_round, fair_seq) WHERE state = 'ready';
CREATE INDEX IF NOT EXISTS stage_runs_scheduled_idx
  ON stage_runs (stage, ready_at) WHERE state = 'scheduled';
CREATE INDEX IF NOT EXISTS stage_runs_lease_idx
  ON stage_runs (lease_expires_at) WHERE state = 'running';

CREATE TABLE IF NOT EXISTS stage_attempts (
  id            BIGSERIAL,
  -- no foreign keys: attempts are history, written on the hot path, and
  -- deleted with their task by whoever deletes tasks
  stage_run_id  BIGINT NOT NULL,
  task_id       BIGINT NOT NULL, -- the run's task (deleted with the run)
  stage         TEXT NOT NULL,
  attempt       INTEGER NOT NULL,
  worker_id     TEXT NOT NULL,
  started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at   TIMESTAMPTZ,
  -- ok, retry, snoozed, released, failed, timeout, lost (lease expired),
  -- cancelled; NULL while running
  outcome       TEXT,
  error_class   TEXT,
  error_message TEXT,
  cost          NUMERIC(14, 6) NOT NULL DEFAULT 0,
  PRIMARY KEY (stage_run_id, attempt)
) WITH (fillfactor = 50); -- room for the outcome update to stay on its page (HOT)

CREATE TABLE IF NOT EXISTS workers (
  id             TEXT PRIMARY KEY,
  host           TEXT NOT NULL,
  pid            INTEGER NOT NULL,
  started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
  last_heartbeat TIMESTAMPTZ NOT NULL DEFAULT now(),
  config_version TEXT,
  stopped_at     TIMESTAMPTZ
);
