-- Every provider as `spool providers` shows it: its limits, the calls running
-- now, the bucket refilled to now (nothing is written), the quota window
-- holding now (units used, when it resets), the pause, the breaker (an open
-- one whose cooldown passed shows 'open' until a claim turns it half-open)
-- and its last p_events events (newest first, as a JSON array of
-- {id, at, at_us (microseconds since the epoch), kind, message,
-- logged_by}).
DROP FUNCTION IF EXISTS spool_providers_status(INTEGER);
CREATE FUNCTION spool_providers_status(p_events INTEGER DEFAULT 5)
RETURNS TABLE (name TEXT, max_concurrent INTEGER, rate_per_s FLOAT8, rate_burst FLOAT8,
               quota_units FLOAT8, quota_reset_at TEXT, quota_time_zone TEXT,
               quota_window_s FLOAT8, quota_units_per_call FLOAT8, quota_units_field TEXT,
               breaker_consecutive INTEGER, breaker_failure_rate FLOAT8,
               breaker_window INTEGER, breaker_cooldown_s FLOAT8, breaker_probes INTEGER,
               running BIGINT, tokens FLOAT8, quota_used FLOAT8,
               quota_window_start TIMESTAMPTZ, quota_resets_at TIMESTAMPTZ,
               paused_until TIMESTAMPTZ, pause_reason TEXT, breaker_state TEXT,
               consecutive_failures INTEGER, recent_calls INTEGER, recent_failures INTEGER,
               opened_at TIMESTAMPTZ, events JSONB)
LANGUAGE sql STABLE AS $$
  SELECT s.name, s.max_concurrent, s.rate_per_s, s.rate_burst, s.quota_units,
         to_char(s.quota_reset_at, 'HH24:MI'), s.quota_time_zone, s.quota_window_s,
         s.quota_units_per_call, s.quota_units_field, s.breaker_consecutive,
         s.breaker_failure_rate, s.breaker_window, s.breaker_cooldown_s, s.breaker_probes,
         (SELECT count(*) FROM stage_runs r WHERE r.provider = s.name AND r.state = 'running'),
         CASE WHEN s.rate_per_s IS NOT NULL THEN
           least(s.rate_burst, coalesce(c.tokens + s.rate_per_s
                 * greatest(0, extract(epoch FROM clock_timestamp() - c.tokens_at)),
                 s.rate_burst)) END,
         CASE WHEN s.quota_units IS NOT NULL THEN
           coalesce((SELECT u.units FROM spool_provider_usage u
                      WHERE u.provider = s.name AND u.window_start = w.window_start), 0) END,
         CASE WHEN s.quota_units IS NOT NULL THEN w.window_start END,
         CASE WHEN s.quota_units IS NOT NULL THEN w.window_end END,
         CASE WHEN s.paused_until > clock_timestamp() THEN s.paused_until END,
         CASE WHEN s.paused_until > clock_timestamp() THEN s.pause_reason END,
         s.breaker_state, s.consecutive_failures, cardinality(s.recent_failed),
         (SELECT count(*)::integer FROM unnest(s.recent_failed) AS f(failed) WHERE f.failed),
         s.opened_at,
         coalesce((SELECT jsonb_agg(jsonb_build_object('id', v.id, 'at', v.at,
                                                       'at_us', (extract(epoch FROM v.at)
                                                                 * 1000000)::bigint,
                                                       'kind', v.kind,
                                                       'message', v.message,
                                                       'logged_by', v.logged_by)
                                    ORDER BY v.id DESC)
                     FROM (SELECT * FROM spool_provider_events v
                            WHERE v.provider = s.name ORDER BY v.id DESC LIMIT p_events) v),
                  '[]'::jsonb)
    FROM spool_providers s
    LEFT JOIN spool_provider_counters c ON c.provider = s.name
    CROSS JOIN LATERAL spool_quota_window(s.quota_window_s, s.quota_reset_at, s.quota_time_zone,
                                          clock_timestamp()) w
   ORDER BY s.name
$$;
