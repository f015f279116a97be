CREATE VIEW buildmaster_v1.buildsets (buildset_id, reason, external_id, submitted_at, completed_at, complete, results, results_name, scheduler_id, scheduler_name, parent_buildset_id, repository, project, branch, revision) AS
SELECT bs.id::bigint,
       bs.reason::text,
       bs.external_id::text,
       bs.submitted_at::timestamptz,
       bs.completed_at::timestamptz,
       (bs.completed_at IS NOT NULL)::boolean,
       bs.results::integer,
       (CASE bs.results
            WHEN 0 THEN 'success' WHEN 1 THEN 'warnings' WHEN 2 THEN 'failure'
            WHEN 3 THEN 'skipped' WHEN 4 THEN 'exception' WHEN 5 THEN 'retry'
            WHEN 6 THEN 'cancelled' END)::text,
       bs.scheduler_id::bigint,
       s.name::text,
       bs.parent_buildset_id::bigint,
       ss.repository::text,
       ss.project::text,
       ss.branch::text,
       ss.revision::text
  FROM buildmaster_private.buildsets bs
  LEFT JOIN buildmaster_private.schedulers s ON s.id = bs.scheduler_id
  LEFT JOIN buildmaster_private.sourcestamps ss ON ss.buildset_id = bs.id AND ss.codebase = '';

COMMENT ON VIEW buildmaster_v1.buildsets IS 'Buildsets: one reason to build (a change, a timer, a force) and one build request per builder. Key: buildset_id.';
COMMENT ON COLUMN buildmaster_v1.buildsets.buildset_id IS 'Stable id of the buildset. Key.';
COMMENT ON COLUMN buildmaster_v1.buildsets.reason IS 'Why the buildset was created, in words.';
COMMENT ON COLUMN buildmaster_v1.buildsets.external_id IS 'Identifier given by an external submitter; NULL when none.';
COMMENT ON COLUMN buildmaster_v1.buildsets.submitted_at IS 'When the buildset was submitted.';
COMMENT ON COLUMN buildmaster_v1.buildsets.completed_at IS 'When its last build request completed; NULL while any is unfinished.';
COMMENT ON COLUMN buildmaster_v1.buildsets.complete IS 'True once every build request of the buildset has completed.';
COMMENT ON COLUMN buildmaster_v1.buildsets.results IS 'Result code, the worst of its requests: 0 success, 1 warnings, 2 failure, 3 skipped, 4 exception, 5 retry, 6 cancelled; NULL while incomplete.';
COMMENT ON COLUMN buildmaster_v1.buildsets.results_name IS 'Name of the result code (success, warnings, failure, skipped, exception, retry, cancelled); NULL while incomplete.';
COMMENT ON COLUMN buildmaster_v1.buildsets.scheduler_id IS 'Scheduler that created the buildset; NULL for API submissions.';
COMMENT ON COLUMN buildmaster_v1.buildsets.scheduler_name IS 'Name of that scheduler; NULL when none.';
COMMENT ON COLUMN buildmaster_v1.buildsets.parent_buildset_id IS 'For triggered or dependent buildsets: the buildset that caused this one; NULL otherwise.';
COMMENT ON COLUMN buildmaster_v1.buildsets.repository IS 'Repository of the default codebase''s source stamp; NULL when the buildset has none.';
COMMENT ON COLUMN buildmaster_v1.buildsets.project IS 'Project of the default codebase''s source stamp; NULL when none.';
COMMENT ON COLUMN buildmaster_v1.buildsets.branch IS 'Branch of the default codebase''s source stamp; NULL when none.';
COMMENT ON COLUMN buildmaster_v1.buildsets.revision IS 'Revision of the default codebase''s source stamp; NULL means the branch tip at build time.';
