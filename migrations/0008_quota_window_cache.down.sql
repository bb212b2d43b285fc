-- 0008_quota_window_cache down: admissions work the window out every time.
-- As after 0006's down, the repeatable R_*.sql files of this version expect
-- the columns: claims behind a provider fail until the next `migrate up`.
ALTER TABLE spool_provider_counters DROP COLUMN IF EXISTS window_end;
ALTER TABLE spool_provider_counters DROP COLUMN IF EXISTS window_start;
