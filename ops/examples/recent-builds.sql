-- psql example: the last 20 builds of builder 'unit', newest first.
--   psql "$READER_URL" -f ops/examples/recent-builds.sql
SELECT number, results_name, started_at, round(duration_s::numeric, 1) AS seconds, branch, revision
  FROM buildmaster_v1.builds
 -- builder_id (not builder_name) lets PostgreSQL read the newest builds
 -- straight from an index, however long the history.
 WHERE builder_id = (SELECT builder_id FROM buildmaster_v1.builders WHERE name = 'unit')
 ORDER BY number DESC
 LIMIT 20;
