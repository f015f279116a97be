CREATE VIEW buildmaster_v1.builder_daily_stats (time, builder_id, builder_name, builds, finished, successes, warnings, failures, median_duration_s, p95_duration_s) AS
SELECT date_trunc('day', b.started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       bl.id::bigint,
       bl.name::text,
       count(*)::bigint,
       count(b.finished_at)::bigint,
       (count(*) FILTER (WHERE b.results = 0))::bigint,
       (count(*) FILTER (WHERE b.results = 1))::bigint,
       (count(*) FILTER (WHERE b.results = 2))::bigint,
       (percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM b.finished_at - b.started_at)))::double precision,
       (percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM b.finished_at - b.started_at)))::double precision
  FROM buildmaster_private.builds b
  JOIN buildmaster_private.builders bl ON bl.id = b.builder_id
 -- Grouping on the builder's id and name and on the day expression lets
 -- filters on builder_id, builder_name and time reach the tables before
 -- aggregation (and the index builds_builder_day).
 GROUP BY bl.id, bl.name, date_trunc('day', b.started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';

COMMENT ON VIEW buildmaster_v1.builder_daily_stats IS 'Builds per builder per UTC day (by start time), for dashboards. Key: (builder_id, time). Filter on time (e.g. Grafana''s $__timeFilter(time)) and on builder_id or builder_name.';
COMMENT ON COLUMN buildmaster_v1.builder_daily_stats.time IS 'Start of the UTC day (00:00:00+00). Key, with builder_id. Grafana''s time column.';
COMMENT ON COLUMN buildmaster_v1.builder_daily_stats.builder_id IS 'The builder. Key, with time.';
COMMENT ON COLUMN buildmaster_v1.builder_daily_stats.builder_name IS 'Name of the builder.';
COMMENT ON COLUMN buildmaster_v1.builder_daily_stats.builds IS 'Builds started that day, finished or not.';
COMMENT ON COLUMN buildmaster_v1.builder_daily_stats.finished IS 'Of those, the builds that have finished.';
COMMENT ON COLUMN buildmaster_v1.builder_daily_stats.successes IS 'Of those, results = 0 (success).';
COMMENT ON COLUMN buildmaster_v1.builder_daily_stats.warnings IS 'Of those, results = 1 (warnings).';
COMMENT ON COLUMN buildmaster_v1.builder_daily_stats.failures IS 'Of those, results = 2 (failure).';
COMMENT ON COLUMN buildmaster_v1.builder_daily_stats.median_duration_s IS 'Median duration of the finished builds, seconds; NULL when none finished.';
COMMENT ON COLUMN buildmaster_v1.builder_daily_stats.p95_duration_s IS '95th percentile of the durations of the finished builds, seconds (interpolated); NULL when none finished.';
