-- 0004_config_versions: configurations stored in the database
-- (`spool config push`), and which one each worker applied.
--
-- spool_config_versions: one row per push, never updated or deleted; the
--   newest version (the highest number) is what `spool run --config db`
--   follows. A push commits its row and NOTIFYs channel spool_config with the
--   version number as payload, in one transaction. content is the file as
--   pushed (comments kept), bounded at 1 MiB; checksum is its
--   config::compute_version (16 lowercase hex digits). A pushed configuration
--   never holds database_url (workers connect before they read it); the CLI
--   refuses one, the table does not know JSON.
-- workers.config_stored_version: the stored version a worker's running
--   configuration came from; NULL when it came from a file.
-- workers.config_applied_at: when the worker applied it (its own clock).
-- workers.config_restart_pending: changed properties the worker kept at their
--   old values because they need a restart.
-- Small tables: nothing here takes a long lock on a busy queue (the ALTERs
-- add nullable or constant-default columns, which PostgreSQL 11+ does
-- without rewriting workers).

CREATE TABLE IF NOT EXISTS spool_config_versions (
  version   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  checksum  TEXT NOT NULL CHECK (checksum ~ '^[0-9a-f]{16}$'),
  content   TEXT NOT NULL CHECK (octet_length(content) BETWEEN 1 AND 1048576),
  pushed_by TEXT NOT NULL CHECK (char_length(pushed_by) BETWEEN 1 AND 256),
  pushed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  note      TEXT NOT NULL DEFAULT '' CHECK (char_length(note) <= 1000)
);

ALTER TABLE workers ADD COLUMN IF NOT EXISTS config_stored_version BIGINT
  CHECK (config_stored_version > 0);
ALTER TABLE workers ADD COLUMN IF NOT EXISTS config_applied_at TIMESTAMPTZ;
ALTER TABLE workers ADD COLUMN IF NOT EXISTS config_restart_pending TEXT[] NOT NULL
  DEFAULT '{}';
