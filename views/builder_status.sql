CREATE VIEW buildmaster_v1.builder_status (builder_id, builder_name, configured, last_build_id, last_build_number, last_started_at, last_finished_at, last_complete, last_results, last_results_name, last_state_string, pending_requests) AS
SELECT bl.id::bigint,
       bl.name::text,
       bl.configured::boolean,
       last.id::bigint,
       last.number::integer,
       last.started_at::timestamptz,
       last.finished_at::timestamptz,
       (last.finished_at IS NOT NULL)::boolean,
       last.results::integer,
       (CASE last.results
            WHEN 0 THEN 'success' WHEN 1 THEN 'warnings' WHEN 2 THEN 'failure'
            WHEN 3 THEN 'skipped' WHEN 4 THEN 'exception' WHEN 5 THEN 'retry'
            WHEN 6 THEN 'cancelled' END)::text,
       last.state_string::text,
       (SELECT count(*) FROM buildmaster_private.build_requests r
         WHERE r.builder_id = bl.id AND r.state = 'pending')::bigint
  FROM buildmaster_private.builders bl
  LEFT JOIN LATERAL (
        SELECT b.id, b.number, b.started_at, b.finished_at, b.results, b.state_string
          FROM buildmaster_private.builds b
         WHERE b.builder_id = bl.id
         ORDER BY b.number DESC
         LIMIT 1) last ON true;

COMMENT ON VIEW buildmaster_v1.builder_status IS 'Every builder with its latest build (highest number, running or finished) and its queue length. Key: builder_id.';
COMMENT ON COLUMN buildmaster_v1.builder_status.builder_id IS 'The builder. Key.';
COMMENT ON COLUMN buildmaster_v1.builder_status.builder_name IS 'Name of the builder.';
COMMENT ON COLUMN buildmaster_v1.builder_status.configured IS 'False once the builder was removed from the configuration.';
COMMENT ON COLUMN buildmaster_v1.builder_status.last_build_id IS 'Latest build; NULL when the builder never built.';
COMMENT ON COLUMN buildmaster_v1.builder_status.last_build_number IS 'Its number; NULL when none.';
COMMENT ON COLUMN buildmaster_v1.builder_status.last_started_at IS 'When it started; NULL when none.';
COMMENT ON COLUMN buildmaster_v1.builder_status.last_finished_at IS 'When it finished; NULL while running or when none.';
COMMENT ON COLUMN buildmaster_v1.builder_status.last_complete IS 'True when the latest build has finished; false while it runs or when there is none.';
COMMENT ON COLUMN buildmaster_v1.builder_status.last_results IS 'Its result code (0 success .. 6 cancelled); NULL while running or when none.';
COMMENT ON COLUMN buildmaster_v1.builder_status.last_results_name IS 'Name of that result code; NULL while running or when none.';
COMMENT ON COLUMN buildmaster_v1.builder_status.last_state_string IS 'Human-readable state of the latest build; NULL when none.';
COMMENT ON COLUMN buildmaster_v1.builder_status.pending_requests IS 'Build requests of this builder waiting for a worker.';
