-- 0007_task_indexes down: the general indexes on state and updated_at again.
DROP INDEX IF EXISTS tasks_awaiting_approval_idx;
CREATE INDEX IF NOT EXISTS tasks_state_idx ON tasks (state);
CREATE INDEX IF NOT EXISTS tasks_updated_at_idx ON tasks (updated_at);
