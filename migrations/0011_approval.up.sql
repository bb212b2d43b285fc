-- 0011_approval up: the approval gate. A stage with `approval: true` copies
-- it into its runs (needs_approval, fixed at enqueue like `optional`): once
-- such a run's inputs are done it stays blocked, and its task waits in
-- awaiting_approval, until the task is approved (tasks.approved) or
-- rejected (the task is cancelled). reviewed_at/by and review_note record
-- the decision.
ALTER TABLE stage_runs ADD COLUMN IF NOT EXISTS needs_approval BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS reviewed_at TIMESTAMPTZ;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS reviewed_by TEXT;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS review_note TEXT;
