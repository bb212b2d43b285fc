DROP FUNCTION IF EXISTS spool_cancel(BIGINT);
DROP FUNCTION IF EXISTS spool_set_priority(BIGINT, spool_priority);
DROP FUNCTION IF EXISTS spool_heartbeat(TEXT, BIGINT);
DROP FUNCTION IF EXISTS spool_rescue(INTEGER);
DROP FUNCTION IF EXISTS spool_record_outcomes(TEXT[], BIGINT[], INTEGER[], TEXT[], BIGINT[],
  JSONB[], NUMERIC[], TEXT[], TEXT[], BIGINT[], BIGINT[]);
DROP FUNCTION IF EXISTS spool_claim(TEXT, INTEGER, TEXT, BIGINT);
DROP FUNCTION IF EXISTS spool_promote(TEXT, INTEGER);
DROP FUNCTION IF EXISTS spool_enqueue(TEXT[], TEXT[], TEXT[], TEXT[], JSONB[], TEXT[],
  NUMERIC[], JSONB);
DROP FUNCTION IF EXISTS spool_make_ready(BIGINT[], BOOLEAN);
DROP FUNCTION IF EXISTS spool_virtual_times(TEXT[], spool_priority[]);
DROP FUNCTION IF EXISTS spool_fair_rounds(TEXT[], spool_priority[], TEXT[]);
DROP FUNCTION IF EXISTS spool_virtual_time(TEXT, spool_priority);
DROP FUNCTION IF EXISTS spool_fair_hint(TEXT, spool_priority);
DROP FUNCTION IF EXISTS spool_fair_hints();
DROP SEQUENCE IF EXISTS spool_fair_seq;
DROP TABLE IF EXISTS stage_fair_channels;
