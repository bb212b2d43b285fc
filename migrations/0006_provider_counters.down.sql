-- 0006_provider_counters down: the bucket goes back into spool_providers;
-- the bound on calls in flight is dropped (claims count). The repeatable
-- R_*.sql files of this version use spool_provider_counters: as after
-- 0005's down, claims behind a provider fail until the next `migrate up`.
ALTER TABLE spool_providers ADD COLUMN IF NOT EXISTS tokens FLOAT8 NOT NULL DEFAULT 0;
ALTER TABLE spool_providers ADD COLUMN IF NOT EXISTS tokens_at TIMESTAMPTZ NOT NULL DEFAULT now();
UPDATE spool_providers s SET tokens = c.tokens, tokens_at = c.tokens_at
  FROM spool_provider_counters c WHERE c.provider = s.name;
DROP TABLE IF EXISTS spool_provider_counters;
