CREATE VIEW buildmaster_v1.builds (build_id, builder_id, builder_name, number, build_request_id, buildset_id, worker_id, worker_name, master_id, master_name, started_at, finished_at, duration_s, complete, state_string, results, results_name, branch, revision) AS
SELECT b.id::bigint,
       b.builder_id::bigint,
       bl.name::text,
       b.number::integer,
       b.build_request_id::bigint,
       r.buildset_id::bigint,
       b.worker_id::bigint,
       w.name::text,
       b.master_id::bigint,
       m.name::text,
       b.started_at::timestamptz,
       b.finished_at::timestamptz,
       (extract(epoch FROM b.finished_at - b.started_at))::double precision,
       (b.finished_at IS NOT NULL)::boolean,
       b.state_string::text,
       b.results::integer,
       (CASE b.results
            WHEN 0 THEN 'success' WHEN 1 THEN 'warnings' WHEN 2 THEN 'failure'
            WHEN 3 THEN 'skipped' WHEN 4 THEN 'exception' WHEN 5 THEN 'retry'
            WHEN 6 THEN 'cancelled' END)::text,
       ss.branch::text,
       ss.revision::text
  FROM buildmaster_private.builds b
  JOIN buildmaster_private.builders bl ON bl.id = b.builder_id
  JOIN buildmaster_private.build_requests r ON r.id = b.build_request_id
  JOIN buildmaster_private.masters m ON m.id = b.master_id
  LEFT JOIN buildmaster_private.workers w ON w.id = b.worker_id
  LEFT JOIN buildmaster_private.sourcestamps ss ON ss.buildset_id = r.buildset_id AND ss.codebase = '';

COMMENT ON VIEW buildmaster_v1.builds IS 'Builds, running and finished. Key: build_id; (builder_id, number) is unique too. For a builder''s latest builds filter on builder_id (not builder_name) and order by number DESC: that reads an index backwards, e.g. WHERE builder_id = (SELECT builder_id FROM buildmaster_v1.builders WHERE name = ''unit'') ORDER BY number DESC LIMIT 50.';
COMMENT ON COLUMN buildmaster_v1.builds.build_id IS 'Stable id of the build. Key.';
COMMENT ON COLUMN buildmaster_v1.builds.builder_id IS 'The builder (buildmaster_v1.builders.builder_id).';
COMMENT ON COLUMN buildmaster_v1.builds.builder_name IS 'Name of the builder.';
COMMENT ON COLUMN buildmaster_v1.builds.number IS 'Build number, counting from 1 per builder without gaps.';
COMMENT ON COLUMN buildmaster_v1.builds.build_request_id IS 'The request this build serves; a request built again after a retry has several builds.';
COMMENT ON COLUMN buildmaster_v1.builds.buildset_id IS 'The buildset of that request.';
COMMENT ON COLUMN buildmaster_v1.builds.worker_id IS 'Worker that ran the build; NULL if none was assigned.';
COMMENT ON COLUMN buildmaster_v1.builds.worker_name IS 'Name of that worker; NULL if none.';
COMMENT ON COLUMN buildmaster_v1.builds.master_id IS 'Master that ran the build.';
COMMENT ON COLUMN buildmaster_v1.builds.master_name IS 'Name of that master.';
COMMENT ON COLUMN buildmaster_v1.builds.started_at IS 'When the build started. Usable as a time column.';
COMMENT ON COLUMN buildmaster_v1.builds.finished_at IS 'When the build finished; NULL while running.';
COMMENT ON COLUMN buildmaster_v1.builds.duration_s IS 'Seconds from start to finish; NULL while running.';
COMMENT ON COLUMN buildmaster_v1.builds.complete IS 'True once the build has finished.';
COMMENT ON COLUMN buildmaster_v1.builds.state_string IS 'Human-readable state, e.g. ''running test'', ''build successful''.';
COMMENT ON COLUMN buildmaster_v1.builds.results IS 'Result code: 0 success, 1 warnings, 2 failure, 3 skipped, 4 exception, 5 retry, 6 cancelled; NULL while running.';
COMMENT ON COLUMN buildmaster_v1.builds.results_name IS 'Name of the result code; NULL while running.';
COMMENT ON COLUMN buildmaster_v1.builds.branch IS 'Branch built (default codebase); NULL when none.';
COMMENT ON COLUMN buildmaster_v1.builds.revision IS 'Revision built (default codebase); NULL means the branch tip.';
