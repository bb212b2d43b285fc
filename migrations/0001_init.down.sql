DROP TABLE IF EXISTS workers;
DROP TABLE IF EXISTS stage_attempts;
DROP TABLE IF EXISTS stage_runs;
DROP TABLE IF EXISTS tasks;
DROP TYPE IF EXISTS spool_run_state;
DROP TYPE IF EXISTS spool_task_state;
DROP TYPE IF EXISTS spool_priority;
