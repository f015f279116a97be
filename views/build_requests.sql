CREATE VIEW buildmaster_v1.build_requests (build_request_id, buildset_id, builder_id, builder_name, priority, state, claimed_by_master_id, claimed_by_master_name, submitted_at, claimed_at, completed_at, results, results_name) AS
SELECT r.id::bigint,
       r.buildset_id::bigint,
       r.builder_id::bigint,
       b.name::text,
       r.priority::integer,
       r.state::text,
       r.claimed_by_master_id::bigint,
       m.name::text,
       r.submitted_at::timestamptz,
       r.claimed_at::timestamptz,
       r.completed_at::timestamptz,
       r.results::integer,
       (CASE r.results
            WHEN 0 THEN 'success' WHEN 1 THEN 'warnings' WHEN 2 THEN 'failure'
            WHEN 3 THEN 'skipped' WHEN 4 THEN 'exception' WHEN 5 THEN 'retry'
            WHEN 6 THEN 'cancelled' END)::text
  FROM buildmaster_private.build_requests r
  JOIN buildmaster_private.builders b ON b.id = r.builder_id
  LEFT JOIN buildmaster_private.masters m ON m.id = r.claimed_by_master_id;

COMMENT ON VIEW buildmaster_v1.build_requests IS 'The build queue: one request per builder of each buildset. Key: build_request_id.';
COMMENT ON COLUMN buildmaster_v1.build_requests.build_request_id IS 'Stable id of the request. Key.';
COMMENT ON COLUMN buildmaster_v1.build_requests.buildset_id IS 'The buildset (buildmaster_v1.buildsets.buildset_id).';
COMMENT ON COLUMN buildmaster_v1.build_requests.builder_id IS 'The builder asked to build (buildmaster_v1.builders.builder_id).';
COMMENT ON COLUMN buildmaster_v1.build_requests.builder_name IS 'Name of that builder.';
COMMENT ON COLUMN buildmaster_v1.build_requests.priority IS 'Higher runs first; among equals, older first. Default 0.';
COMMENT ON COLUMN buildmaster_v1.build_requests.state IS 'pending (waiting for a worker), claimed (a master is building it), completed (finished, see results) or cancelled.';
COMMENT ON COLUMN buildmaster_v1.build_requests.claimed_by_master_id IS 'Master building the request while claimed; NULL otherwise.';
COMMENT ON COLUMN buildmaster_v1.build_requests.claimed_by_master_name IS 'Name of that master; NULL unless claimed.';
COMMENT ON COLUMN buildmaster_v1.build_requests.submitted_at IS 'When the request was queued.';
COMMENT ON COLUMN buildmaster_v1.build_requests.claimed_at IS 'When the current claim was taken; NULL unless claimed.';
COMMENT ON COLUMN buildmaster_v1.build_requests.completed_at IS 'When the request completed or was cancelled; NULL before.';
COMMENT ON COLUMN buildmaster_v1.build_requests.results IS 'Result code once completed: 0 success, 1 warnings, 2 failure, 3 skipped, 4 exception, 5 retry, 6 cancelled; NULL before.';
COMMENT ON COLUMN buildmaster_v1.build_requests.results_name IS 'Name of the result code; NULL before completion.';
