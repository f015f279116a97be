-- psql example: the last 20 builds of builder 'unit', newest first.
--   psql "$READER_URL" -f ops/examples/recent-builds.sql
SELECT number, results_name, started_at, round(duration_s::numeric, 1) AS seconds, branch, revision
  FROM buildmaster_v1.builds
 WHERE builder_name = 'unit'
 ORDER BY number DESC
 LIMIT 20;
