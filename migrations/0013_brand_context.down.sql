-- 0013_brand_context down: guidelines, briefs and the tasks' snapshots of
-- them are lost. The repeatable scripts of this version use them: the queue
-- is not usable until the next `migrate up`.
DROP FUNCTION IF EXISTS spool_task_context(TEXT, TEXT);
ALTER TABLE tasks DROP COLUMN IF EXISTS context;
DROP TABLE IF EXISTS spool_campaigns;
DROP TABLE IF EXISTS spool_brands;
