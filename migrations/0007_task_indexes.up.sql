-- 0007_task_indexes up: tasks keeps the indexes its queries use. No query
-- reads tasks by updated_at, and by state only the stale-approval count
-- does (tasks awaiting approval, a handful); the status counts scan. The two
-- general indexes cost every enqueue two index entries, and every update of
-- a task (each outcome of a multi-stage pipeline moves updated_at) a new
-- entry in every index of the table, where without an indexed updated_at an
-- update that keeps the state is a HOT update.
DROP INDEX IF EXISTS tasks_state_idx;
DROP INDEX IF EXISTS tasks_updated_at_idx;
CREATE INDEX IF NOT EXISTS tasks_awaiting_approval_idx ON tasks (id)
  WHERE state = 'awaiting_approval';
