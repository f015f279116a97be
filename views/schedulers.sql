CREATE VIEW buildmaster_v1.schedulers (scheduler_id, name, kind, enabled, configured, next_run_at) AS
SELECT s.id::bigint,
       s.name::text,
       s.kind::text,
       s.enabled::boolean,
       s.configured::boolean,
       s.next_run_at::timestamptz
  FROM buildmaster_private.schedulers s;

COMMENT ON VIEW buildmaster_v1.schedulers IS 'Schedulers: what turns changes and clocks into buildsets. Key: scheduler_id.';
COMMENT ON COLUMN buildmaster_v1.schedulers.scheduler_id IS 'Stable id of the scheduler. Key.';
COMMENT ON COLUMN buildmaster_v1.schedulers.name IS 'Configured name, unique.';
COMMENT ON COLUMN buildmaster_v1.schedulers.kind IS 'single-branch, any-branch, periodic, nightly, force, triggerable or dependent.';
COMMENT ON COLUMN buildmaster_v1.schedulers.enabled IS 'False when the scheduler is disabled: it creates no buildsets.';
COMMENT ON COLUMN buildmaster_v1.schedulers.configured IS 'False once the scheduler was removed from the configuration.';
COMMENT ON COLUMN buildmaster_v1.schedulers.next_run_at IS 'Next timed run for periodic and nightly schedulers; NULL for the others.';
