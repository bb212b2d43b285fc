-- 0012_api_tokens up: bearer tokens of the client API (`spool serve`),
-- stored as their SHA-256 (the token itself is shown once, when created).
-- client_id NULL: an admin token, which sees and changes every client's
-- jobs; otherwise the token's client sees only its own. prefix (the first
-- characters of the token) lets an operator tell tokens apart.
CREATE TABLE IF NOT EXISTS spool_api_tokens (
  id           BIGSERIAL PRIMARY KEY,
  client_id    TEXT CHECK (client_id IS NULL OR client_id <> ''),
  name         TEXT NOT NULL DEFAULT '',
  hash         BYTEA NOT NULL UNIQUE,
  prefix       TEXT NOT NULL,
  created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
  created_by   TEXT,
  revoked_at   TIMESTAMPTZ,
  last_used_at TIMESTAMPTZ
);
