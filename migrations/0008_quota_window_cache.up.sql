-- 0008_quota_window_cache up: the counters row remembers the provider's
-- current quota window, so that an admission reads the window's usage in the
-- same statement as the provider's limits instead of working the window out
-- (a time zone conversion) and reading the usage apart at every claim.
--   window_start, window_end  the quota window the last admission was in;
--                             NULL: not known (no quota, or its window
--                             settings were written since; see
--                             spool_sync_providers)
ALTER TABLE spool_provider_counters ADD COLUMN IF NOT EXISTS window_start TIMESTAMPTZ;
ALTER TABLE spool_provider_counters ADD COLUMN IF NOT EXISTS window_end TIMESTAMPTZ;
