CREATE VIEW buildmaster_v1.workers (worker_id, name, kind, max_builds, configured, connected, master_id, master_name, connected_at, disconnected_at) AS
SELECT w.id::bigint,
       w.name::text,
       w.kind::text,
       w.max_builds::integer,
       w.configured::boolean,
       (w.master_id IS NOT NULL)::boolean,
       w.master_id::bigint,
       m.name::text,
       w.connected_at::timestamptz,
       w.disconnected_at::timestamptz
  FROM buildmaster_private.workers w
  LEFT JOIN buildmaster_private.masters m ON m.id = w.master_id;

COMMENT ON VIEW buildmaster_v1.workers IS 'Workers known from the masters'' configurations. Key: worker_id.';
COMMENT ON COLUMN buildmaster_v1.workers.worker_id IS 'Stable id of the worker. Key.';
COMMENT ON COLUMN buildmaster_v1.workers.name IS 'Configured name of the worker, unique.';
COMMENT ON COLUMN buildmaster_v1.workers.kind IS 'local (steps run as subprocesses on the master''s machine) or remote.';
COMMENT ON COLUMN buildmaster_v1.workers.max_builds IS 'Largest number of builds the worker runs at once.';
COMMENT ON COLUMN buildmaster_v1.workers.configured IS 'False once the worker was removed from every configuration; its history stays.';
COMMENT ON COLUMN buildmaster_v1.workers.connected IS 'True while the worker is connected to a master.';
COMMENT ON COLUMN buildmaster_v1.workers.master_id IS 'Master the worker is connected to; NULL when disconnected.';
COMMENT ON COLUMN buildmaster_v1.workers.master_name IS 'Name of that master; NULL when disconnected.';
COMMENT ON COLUMN buildmaster_v1.workers.connected_at IS 'When the worker last connected.';
COMMENT ON COLUMN buildmaster_v1.workers.disconnected_at IS 'When the worker last disconnected.';
