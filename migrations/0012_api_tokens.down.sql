-- 0012_api_tokens down: every API token is forgotten.
DROP TABLE IF EXISTS spool_api_tokens;
