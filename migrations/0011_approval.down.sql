-- 0011_approval down: the gate's columns go (runs waiting for an approval
-- would start once their inputs are done). The repeatable scripts of this
-- version use them: the queue is not usable until the next `migrate up`.
DROP FUNCTION IF EXISTS spool_approve(BIGINT, TEXT, TEXT);
DROP FUNCTION IF EXISTS spool_reject(BIGINT, TEXT, TEXT);
ALTER TABLE tasks DROP COLUMN IF EXISTS review_note;
ALTER TABLE tasks DROP COLUMN IF EXISTS reviewed_by;
ALTER TABLE tasks DROP COLUMN IF EXISTS reviewed_at;
ALTER TABLE stage_runs DROP COLUMN IF EXISTS needs_approval;
