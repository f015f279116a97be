CREATE VIEW buildmaster_v1.change_files (change_id, filename) AS
SELECT f.change_id::bigint,
       f.filename::text
  FROM buildmaster_private.change_files f;

COMMENT ON VIEW buildmaster_v1.change_files IS 'Files touched by each change. Key: (change_id, filename).';
COMMENT ON COLUMN buildmaster_v1.change_files.change_id IS 'The change (buildmaster_v1.changes.change_id). Key, with filename.';
COMMENT ON COLUMN buildmaster_v1.change_files.filename IS 'Path of a file touched by the change. Key, with change_id.';
