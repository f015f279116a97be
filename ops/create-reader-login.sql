-- Creates (or updates) a login for a dashboard or report that reads the
-- published views of buildmaster_v1 and nothing else.
--
-- Run as a superuser or a role with CREATEROLE, connected to buildmaster's
-- database:
--
--   psql "postgresql://admin@db.example.org/buildmaster" \
--        -v login=grafana -v password='a-long-random-secret' \
--        -f ops/create-reader-login.sql
--
-- The login gets the role buildmaster_reader (USAGE on buildmaster_v1,
-- SELECT on its views, nothing on buildmaster_private, no CREATE, no TEMP),
-- sessions in UTC, read-only transactions by default, buildmaster_v1 first
-- on its search path, and a statement timeout so a runaway report cannot
-- hold the master's tables.
\set ON_ERROR_STOP on

SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'login') AS bm_create_login \gset
\if :bm_create_login
CREATE ROLE :"login" LOGIN PASSWORD :'password' INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE;
\else
ALTER ROLE :"login" LOGIN PASSWORD :'password';
\endif
GRANT buildmaster_reader TO :"login";
ALTER ROLE :"login" SET TimeZone = 'UTC';
ALTER ROLE :"login" SET search_path = buildmaster_v1;
ALTER ROLE :"login" SET default_transaction_read_only = on;
ALTER ROLE :"login" SET statement_timeout = '60s';
