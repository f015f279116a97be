-- A request to stop a running build (API stop, or cancelling its request).
-- The master running the build notices it (LISTEN/NOTIFY, or its poll) and
-- kills the build's processes; the build ends `cancelled`.
ALTER TABLE buildmaster_private.builds ADD COLUMN stop_requested_at timestamptz;
ALTER TABLE buildmaster_private.builds ADD COLUMN stop_reason text;
CREATE INDEX builds_stop_requested ON buildmaster_private.builds (master_id)
    WHERE stop_requested_at IS NOT NULL AND finished_at IS NULL;
