-- 0010_worker_http down: the workers' HTTP addresses are forgotten.
ALTER TABLE workers DROP COLUMN IF EXISTS http_address;
