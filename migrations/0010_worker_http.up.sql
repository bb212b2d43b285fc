-- 0010_worker_http up: where each worker serves /metrics, /healthz and
-- /readyz ("host:port"; NULL: nowhere), registered by the worker and shown
-- by `spool status`, so an operator (or a scrape config generator) finds
-- every worker's endpoint, including ports the system picked.
ALTER TABLE workers ADD COLUMN IF NOT EXISTS http_address TEXT;
