-- 0004_config_versions down: every stored configuration is lost; workers
-- running `--config db` can no longer reload (they keep what they run).
ALTER TABLE workers DROP COLUMN IF EXISTS config_restart_pending;
ALTER TABLE workers DROP COLUMN IF EXISTS config_applied_at;
ALTER TABLE workers DROP COLUMN IF EXISTS config_stored_version;
DROP TABLE IF EXISTS spool_config_versions;
