CREATE VIEW buildmaster_v1.logs (log_id, step_id, build_id, name, slug, type, num_lines, complete) AS
SELECT l.id::bigint,
       l.step_id::bigint,
       s.build_id::bigint,
       l.name::text,
       l.slug::text,
       (CASE l.type WHEN 's' THEN 'stdio' WHEN 't' THEN 'text' WHEN 'h' THEN 'html' END)::text,
       l.num_lines::integer,
       l.complete::boolean
  FROM buildmaster_private.logs l
  JOIN buildmaster_private.steps s ON s.id = l.step_id;

COMMENT ON VIEW buildmaster_v1.logs IS 'Logs of steps. Key: log_id; (step_id, slug) is unique too. Their text is in buildmaster_v1.log_lines.';
COMMENT ON COLUMN buildmaster_v1.logs.log_id IS 'Stable id of the log. Key.';
COMMENT ON COLUMN buildmaster_v1.logs.step_id IS 'The step (buildmaster_v1.steps.step_id).';
COMMENT ON COLUMN buildmaster_v1.logs.build_id IS 'The build of that step.';
COMMENT ON COLUMN buildmaster_v1.logs.name IS 'Display name of the log, e.g. stdio.';
COMMENT ON COLUMN buildmaster_v1.logs.slug IS 'URL-safe name of the log, unique within its step.';
COMMENT ON COLUMN buildmaster_v1.logs.type IS 'stdio (command output; each line has a stream), text or html.';
COMMENT ON COLUMN buildmaster_v1.logs.num_lines IS 'Number of lines stored so far.';
COMMENT ON COLUMN buildmaster_v1.logs.complete IS 'True once the step finished writing the log.';
