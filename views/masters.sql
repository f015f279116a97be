CREATE VIEW buildmaster_v1.masters (master_id, name, active, started_at, last_heartbeat_at, stopped_at) AS
SELECT m.id::bigint,
       m.name::text,
       m.active::boolean,
       m.started_at::timestamptz,
       m.last_heartbeat_at::timestamptz,
       m.stopped_at::timestamptz
  FROM buildmaster_private.masters m;

COMMENT ON VIEW buildmaster_v1.masters IS 'Masters that have used this database, one row per master name. Key: master_id.';
COMMENT ON COLUMN buildmaster_v1.masters.master_id IS 'Stable id of the master. Key.';
COMMENT ON COLUMN buildmaster_v1.masters.name IS 'Configured name of the master ([master] name), unique.';
COMMENT ON COLUMN buildmaster_v1.masters.active IS 'True while the master runs (or until it is found dead); false after a clean stop or expiry.';
COMMENT ON COLUMN buildmaster_v1.masters.started_at IS 'When the current (or last) run of this master started.';
COMMENT ON COLUMN buildmaster_v1.masters.last_heartbeat_at IS 'Last heartbeat of the master; a live master beats every [master] heartbeat_interval_s (default 5 s).';
COMMENT ON COLUMN buildmaster_v1.masters.stopped_at IS 'When the master stopped; NULL while active.';
