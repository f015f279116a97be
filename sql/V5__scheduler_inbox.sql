-- Change-driven schedulers get their changes through an inbox filled in the
-- transaction that records the change: reading "changes with an id above
-- the last one seen" skips a change whose transaction commits after a
-- later id's (ids are handed out at insert, not at commit). Inbox rows start
-- unclassified; the scheduler keeps the ones it accepts (classified) and
-- deletes the others.
ALTER TABLE buildmaster_private.scheduler_changes
    ADD COLUMN classified boolean NOT NULL DEFAULT true;
ALTER TABLE buildmaster_private.scheduler_changes ALTER COLUMN classified SET DEFAULT false;
CREATE INDEX scheduler_changes_unclassified ON buildmaster_private.scheduler_changes (scheduler_id, change_id)
    WHERE NOT classified;
