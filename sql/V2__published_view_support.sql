-- Support for the published views of buildmaster_v1 (see views/).
--
-- Views are owned by buildmaster_views, a NOLOGIN role that is not a
-- superuser and may only read the private tables. Reading a view checks the
-- tables against the view's owner, so buildmaster_reader needs no right on
-- the private schema at all. The grants on the tables themselves are
-- (re)applied with the views, so tables added by later migrations are
-- covered.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'buildmaster_views') THEN
        BEGIN
            CREATE ROLE buildmaster_views NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    -- The migrating user hands the views to buildmaster_views, which
    -- requires membership.
    IF NOT pg_has_role(current_user, 'buildmaster_views', 'MEMBER') THEN
        EXECUTE format('GRANT buildmaster_views TO %I', current_user);
    END IF;
END
$roles$;

GRANT USAGE ON SCHEMA buildmaster_private TO buildmaster_views;
-- buildmaster_views owns the views it must be able to create in the schema.
GRANT USAGE, CREATE ON SCHEMA buildmaster_v1 TO buildmaster_views;

-- builder_daily_stats groups builds per builder and UTC day; this index
-- matches its grouping expression so that a Grafana time filter on one
-- builder reads only the days asked for.
CREATE INDEX builds_builder_day ON buildmaster_private.builds
    (builder_id, (date_trunc('day', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'));
