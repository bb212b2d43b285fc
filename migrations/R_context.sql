-- The context a task's stages get: the client's brand guidelines and the
-- campaign's brief, as given, and prompt_context, one string of them for a
-- prompt ("Brand acme: voice: warm; colors: teal, sand. Campaign spring:
-- goal: ..."): each field "name: value", lists joined by ", ", fields by
-- "; ", in name order. NULL when neither exists (most tasks: two index
-- probes at enqueue, nothing at claim time).
CREATE OR REPLACE FUNCTION spool_context_text(p_fields JSONB)
RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
  SELECT string_agg(f.key || ': ' || CASE jsonb_typeof(f.value)
           WHEN 'array' THEN (SELECT string_agg(x #>> '{}', ', ') FROM jsonb_array_elements(f.value) x)
           ELSE f.value #>> '{}' END, '; ' ORDER BY f.key)
    FROM jsonb_each(p_fields) f
$$;

CREATE OR REPLACE FUNCTION spool_task_context(p_client TEXT, p_campaign TEXT)
RETURNS JSONB LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN b.guidelines IS NULL AND c.brief IS NULL THEN NULL ELSE
    jsonb_build_object(
      'client_id', p_client, 'campaign_id', p_campaign,
      'brand', b.guidelines, 'brief', c.brief,
      'prompt_context', concat_ws(' ',
        'Brand ' || p_client || ': ' || spool_context_text(b.guidelines) || '.',
        'Campaign ' || p_campaign || ': ' || spool_context_text(c.brief) || '.'))
  END
  FROM (SELECT 1) one
  LEFT JOIN spool_brands b ON b.client_id = p_client AND p_client <> ''
  LEFT JOIN spool_campaigns c ON c.campaign_id = p_campaign AND p_campaign <> ''
$$;
