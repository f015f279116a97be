-- Fills an EMPTY, migrated buildmaster database with a synthetic history for
-- benchmarks of the published views: :builders builders (default 100),
-- :builds builds (default 1,000,000) spread over the last 180 days, each with
-- its buildset, source stamp and build request, and 5 steps per build
-- (5,000,000 steps by default). Results: about 85% success, 5% warnings,
-- 8% failure, 2% exception; durations 30 s to 10 min.
--
--   psql "$DATABASE_URL" -v builds=1000000 -f ops/generate-history.sql
--
-- It refuses to run on a database that already has builds.
\set ON_ERROR_STOP on
\if :{?builds}
\else
\set builds 1000000
\endif
\if :{?builders}
\else
\set builders 100
\endif

BEGIN;
SET LOCAL statement_timeout = 0;
SET LOCAL synchronous_commit = off;

DO $check$
BEGIN
    IF EXISTS (SELECT FROM buildmaster_private.builds) THEN
        RAISE EXCEPTION 'generate-history.sql needs an empty database: this one has builds';
    END IF;
END
$check$;

INSERT INTO buildmaster_private.masters (name, incarnation, active, started_at, last_heartbeat_at, stopped_at)
VALUES ('generator', gen_random_uuid(), false, now() - interval '181 days', now(), now())
ON CONFLICT (name) DO NOTHING;

INSERT INTO buildmaster_private.workers (name, kind, max_builds)
SELECT 'gen-worker-' || w, 'local', 4 FROM generate_series(1, 8) w
ON CONFLICT (name) DO NOTHING;

INSERT INTO buildmaster_private.builders (name, description, next_build_number)
SELECT 'builder-' || b, 'generated builder ' || b, :builds / :builders + 2
  FROM generate_series(1, :builders) b;

CREATE TEMP TABLE gen_builds ON COMMIT DROP AS
SELECT g AS n,
       (SELECT id FROM buildmaster_private.builders WHERE name = 'builder-' || ((g - 1) % :builders + 1)) AS builder_id,
       (g - 1) / :builders + 1 AS number,
       now() - interval '180 days' + (g::double precision / :builds) * interval '180 days' AS started_at,
       interval '30 seconds' + random() * interval '570 seconds' AS duration,
       random() AS dice
  FROM generate_series(1, :builds) g;

INSERT INTO buildmaster_private.buildsets (id, buildset_uuid, reason, submitted_at, completed_at, results)
OVERRIDING SYSTEM VALUE
SELECT n, gen_random_uuid(), 'generated', started_at - interval '5 seconds', started_at + duration,
       CASE WHEN dice < 0.85 THEN 0 WHEN dice < 0.90 THEN 1 WHEN dice < 0.98 THEN 2 ELSE 4 END
  FROM gen_builds;

INSERT INTO buildmaster_private.sourcestamps (buildset_id, repository, project, branch, revision)
SELECT n, 'https://git.example.org/app.git', 'app', CASE WHEN n % 10 = 0 THEN 'release' ELSE 'main' END,
       md5(n::text)
  FROM gen_builds;

INSERT INTO buildmaster_private.build_requests (id, buildset_id, builder_id, state, submitted_at, completed_at, results)
OVERRIDING SYSTEM VALUE
SELECT n, n, builder_id, 'completed', started_at - interval '5 seconds', started_at + duration,
       CASE WHEN dice < 0.85 THEN 0 WHEN dice < 0.90 THEN 1 WHEN dice < 0.98 THEN 2 ELSE 4 END
  FROM gen_builds;

INSERT INTO buildmaster_private.builds (id, build_uuid, builder_id, number, build_request_id, worker_id, master_id,
                                        started_at, finished_at, state_string, results)
OVERRIDING SYSTEM VALUE
SELECT n, gen_random_uuid(), builder_id, number, n,
       (SELECT id FROM buildmaster_private.workers WHERE name = 'gen-worker-' || (n % 8 + 1)),
       (SELECT id FROM buildmaster_private.masters WHERE name = 'generator'),
       started_at, started_at + duration,
       CASE WHEN dice < 0.85 THEN 'build successful' WHEN dice < 0.90 THEN 'warnings' WHEN dice < 0.98 THEN 'failed test' ELSE 'exception' END,
       CASE WHEN dice < 0.85 THEN 0 WHEN dice < 0.90 THEN 1 WHEN dice < 0.98 THEN 2 ELSE 4 END
  FROM gen_builds;

INSERT INTO buildmaster_private.steps (build_id, number, name, started_at, finished_at, state_string, results)
SELECT b.n, s, (ARRAY['checkout', 'configure', 'compile', 'test', 'upload'])[s + 1],
       b.started_at + b.duration * (s / 5.0), b.started_at + b.duration * ((s + 1) / 5.0),
       'done', CASE WHEN s = 3 AND b.dice >= 0.90 THEN 2 ELSE 0 END
  FROM gen_builds b, generate_series(0, 4) s;

SELECT setval(pg_get_serial_sequence('buildmaster_private.buildsets', 'id'), :builds);
SELECT setval(pg_get_serial_sequence('buildmaster_private.build_requests', 'id'), :builds);
SELECT setval(pg_get_serial_sequence('buildmaster_private.builds', 'id'), :builds);
COMMIT;

ANALYZE buildmaster_private.builders, buildmaster_private.buildsets, buildmaster_private.sourcestamps,
        buildmaster_private.build_requests, buildmaster_private.builds, buildmaster_private.steps;
