CREATE VIEW buildmaster_v1.changes (change_id, author, committer, comments, repository, project, codebase, branch, revision, revlink, category, source, when_at, created_at, properties) AS
SELECT c.id::bigint,
       c.author::text,
       c.committer::text,
       c.comments::text,
       c.repository::text,
       c.project::text,
       c.codebase::text,
       c.branch::text,
       c.revision::text,
       c.revlink::text,
       c.category::text,
       c.source::text,
       c.when_at::timestamptz,
       c.created_at::timestamptz,
       c.properties::jsonb
  FROM buildmaster_private.changes c;

COMMENT ON VIEW buildmaster_v1.changes IS 'Source changes submitted to the masters (API, webhooks, sendchange). Key: change_id.';
COMMENT ON COLUMN buildmaster_v1.changes.change_id IS 'Stable id of the change, increasing in order of recording. Key.';
COMMENT ON COLUMN buildmaster_v1.changes.author IS 'Author of the change.';
COMMENT ON COLUMN buildmaster_v1.changes.committer IS 'Committer, when given; NULL otherwise.';
COMMENT ON COLUMN buildmaster_v1.changes.comments IS 'Commit message.';
COMMENT ON COLUMN buildmaster_v1.changes.repository IS 'Repository URL or name; empty string when not given.';
COMMENT ON COLUMN buildmaster_v1.changes.project IS 'Project name; empty string when not given.';
COMMENT ON COLUMN buildmaster_v1.changes.codebase IS 'Codebase name; empty string for the default codebase.';
COMMENT ON COLUMN buildmaster_v1.changes.branch IS 'Branch the change is on; NULL when none.';
COMMENT ON COLUMN buildmaster_v1.changes.revision IS 'Revision (commit id); NULL when none.';
COMMENT ON COLUMN buildmaster_v1.changes.revlink IS 'Link to the revision in a web UI; NULL when none.';
COMMENT ON COLUMN buildmaster_v1.changes.category IS 'Free-form category; NULL when none.';
COMMENT ON COLUMN buildmaster_v1.changes.source IS 'How the change arrived: api, github, gitlab, cli.';
COMMENT ON COLUMN buildmaster_v1.changes.when_at IS 'When the change was made (as reported by its source).';
COMMENT ON COLUMN buildmaster_v1.changes.created_at IS 'When the master recorded the change.';
COMMENT ON COLUMN buildmaster_v1.changes.properties IS 'Extra properties as a JSON object.';
