-- Dependent schedulers get the upstream buildsets that finished with
-- success or warnings through an inbox filled in the transaction that
-- completes the buildset (walking upstream buildsets by id could skip one
-- committed after a higher id, like changes before V5).
CREATE TABLE buildmaster_private.scheduler_upstream (
    scheduler_id bigint NOT NULL REFERENCES buildmaster_private.schedulers (id) ON DELETE CASCADE,
    buildset_id  bigint NOT NULL REFERENCES buildmaster_private.buildsets (id) ON DELETE CASCADE,
    PRIMARY KEY (scheduler_id, buildset_id)
);
GRANT SELECT ON buildmaster_private.scheduler_upstream TO buildmaster_views;
