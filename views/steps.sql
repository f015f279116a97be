CREATE VIEW buildmaster_v1.steps (step_id, build_id, number, name, started_at, finished_at, duration_s, complete, state_string, results, results_name, always_run) AS
SELECT s.id::bigint,
       s.build_id::bigint,
       s.number::integer,
       s.name::text,
       s.started_at::timestamptz,
       s.finished_at::timestamptz,
       (extract(epoch FROM s.finished_at - s.started_at))::double precision,
       (s.finished_at IS NOT NULL)::boolean,
       s.state_string::text,
       s.results::integer,
       (CASE s.results
            WHEN 0 THEN 'success' WHEN 1 THEN 'warnings' WHEN 2 THEN 'failure'
            WHEN 3 THEN 'skipped' WHEN 4 THEN 'exception' WHEN 5 THEN 'retry'
            WHEN 6 THEN 'cancelled' END)::text,
       s.always_run::boolean
  FROM buildmaster_private.steps s;

COMMENT ON VIEW buildmaster_v1.steps IS 'Steps of builds, in order. Key: step_id; (build_id, number) is unique too.';
COMMENT ON COLUMN buildmaster_v1.steps.step_id IS 'Stable id of the step. Key.';
COMMENT ON COLUMN buildmaster_v1.steps.build_id IS 'The build (buildmaster_v1.builds.build_id).';
COMMENT ON COLUMN buildmaster_v1.steps.number IS 'Position of the step in its build, from 0.';
COMMENT ON COLUMN buildmaster_v1.steps.name IS 'Configured name of the step.';
COMMENT ON COLUMN buildmaster_v1.steps.started_at IS 'When the step started; NULL before.';
COMMENT ON COLUMN buildmaster_v1.steps.finished_at IS 'When the step finished (or was skipped); NULL before.';
COMMENT ON COLUMN buildmaster_v1.steps.duration_s IS 'Seconds from start to finish; NULL until finished.';
COMMENT ON COLUMN buildmaster_v1.steps.complete IS 'True once the step has finished or was skipped.';
COMMENT ON COLUMN buildmaster_v1.steps.state_string IS 'Human-readable state, e.g. ''running'', ''exit code 1''.';
COMMENT ON COLUMN buildmaster_v1.steps.results IS 'Result code: 0 success, 1 warnings, 2 failure, 3 skipped, 4 exception, 5 retry, 6 cancelled; NULL until finished.';
COMMENT ON COLUMN buildmaster_v1.steps.results_name IS 'Name of the result code; NULL until finished.';
COMMENT ON COLUMN buildmaster_v1.steps.always_run IS 'True when the step runs even after an earlier failure or a cancel.';
