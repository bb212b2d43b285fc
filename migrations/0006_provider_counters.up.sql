-- 0006_provider_counters up: what every claim behind a provider writes (the
-- token bucket, and an upper bound on the calls in flight) moves out of
-- spool_providers into a narrow row of its own. spool_providers keeps the
-- limits and the breaker and pause state, which change rarely; an update of
-- its row checks every constraint of the limits, which a claim need not pay.
--
-- spool_provider_counters: one row per provider (spool_sync_providers
-- writes it with the provider's).
--   tokens, tokens_at  the bucket: tokens at tokens_at (refilled at the rate
--                      from then on, up to the burst)
--   inflight_bound     with max_concurrent, an upper bound on the provider's
--                      running calls: every claim adds what it admitted, and
--                      runs end without touching it, so it only grows
--                      between the counts that reset it (see
--                      R_provider_admission.sql); NULL: unknown, count
CREATE TABLE IF NOT EXISTS spool_provider_counters (
  provider       TEXT PRIMARY KEY REFERENCES spool_providers (name) ON DELETE CASCADE,
  tokens         FLOAT8 NOT NULL DEFAULT 0,
  tokens_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
  inflight_bound BIGINT
);
INSERT INTO spool_provider_counters (provider, tokens, tokens_at)
SELECT s.name, s.tokens, s.tokens_at FROM spool_providers s
ON CONFLICT (provider) DO NOTHING;
ALTER TABLE spool_providers DROP COLUMN IF EXISTS tokens, DROP COLUMN IF EXISTS tokens_at;
