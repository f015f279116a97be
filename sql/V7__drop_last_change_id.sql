-- Change-driven schedulers read their inbox (V5); the last change id they
-- looked at is no longer used by anything.
ALTER TABLE buildmaster_private.schedulers DROP COLUMN last_change_id;
