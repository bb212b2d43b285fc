-- 0013_brand_context up: brand guidelines per client and briefs per
-- campaign (JSON objects of text fields, set with `spool brand set` /
-- `spool campaign set` or the API). A task enqueued for a client or
-- campaign that has them keeps a snapshot in tasks.context (the guidelines
-- in force when the video was ordered make every one of its stages), which
-- every stage's input carries.
CREATE TABLE IF NOT EXISTS spool_brands (
  client_id  TEXT PRIMARY KEY CHECK (client_id <> ''),
  guidelines JSONB NOT NULL CHECK (jsonb_typeof(guidelines) = 'object'),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_by TEXT
);
CREATE TABLE IF NOT EXISTS spool_campaigns (
  campaign_id TEXT PRIMARY KEY CHECK (campaign_id <> ''),
  client_id   TEXT NOT NULL DEFAULT '',
  brief       JSONB NOT NULL CHECK (jsonb_typeof(brief) = 'object'),
  updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_by  TEXT
);
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS context JSONB;
