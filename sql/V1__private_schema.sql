-- buildmaster private schema, version 1.
--
-- Only the master reads and writes these tables. Outside tools read the
-- published views in buildmaster_v1 (see views/). Released migrations are
-- never edited: add a new V<n>__<what>.sql instead.
--
-- The schema buildmaster_private itself is created by the migration runner
-- (it holds refinery's history table). Result codes everywhere are
-- Buildbot's: 0 success, 1 warnings, 2 failure, 3 skipped, 4 exception,
-- 5 retry, 6 cancelled.

REVOKE ALL ON SCHEMA buildmaster_private FROM PUBLIC;

-- Masters sharing this database. A master heartbeats its row; staleness is
-- judged only over time the database itself was up (see maintenance).
CREATE TABLE buildmaster_private.masters (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text        NOT NULL UNIQUE CHECK (name <> ''),
    -- New at every start of the process: tells a restarted master from the
    -- one that held the name before.
    incarnation       uuid        NOT NULL,
    active            boolean     NOT NULL DEFAULT true,
    started_at        timestamptz NOT NULL,
    last_heartbeat_at timestamptz NOT NULL,
    stopped_at        timestamptz,
    CHECK (last_heartbeat_at >= started_at),
    CHECK (active = (stopped_at IS NULL))
);

-- Workers known from the configuration, and which master they are connected to.
CREATE TABLE buildmaster_private.workers (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text        NOT NULL UNIQUE CHECK (name <> ''),
    kind            text        NOT NULL CHECK (kind IN ('local', 'remote')),
    max_builds      integer     NOT NULL DEFAULT 1 CHECK (max_builds > 0),
    -- Still present in some master's configuration; removed ones stay for history.
    configured      boolean     NOT NULL DEFAULT true,
    info            jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(info) = 'object'),
    master_id       bigint      REFERENCES buildmaster_private.masters (id),
    connected_at    timestamptz,
    disconnected_at timestamptz,
    CHECK (master_id IS NULL OR connected_at IS NOT NULL)
);
CREATE INDEX workers_master ON buildmaster_private.workers (master_id) WHERE master_id IS NOT NULL;

CREATE TABLE buildmaster_private.builders (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]*$'),
    description       text,
    tags              text[]      NOT NULL DEFAULT '{}',
    configured        boolean     NOT NULL DEFAULT true,
    -- The builder's configuration as last synchronised (steps, workers).
    config            jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    -- Next build number: taken and incremented in the transaction that
    -- creates a build, so numbers per builder are gap-free.
    next_build_number integer     NOT NULL DEFAULT 1 CHECK (next_build_number > 0),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE buildmaster_private.builder_workers (
    builder_id bigint NOT NULL REFERENCES buildmaster_private.builders (id) ON DELETE CASCADE,
    worker_id  bigint NOT NULL REFERENCES buildmaster_private.workers (id) ON DELETE CASCADE,
    PRIMARY KEY (builder_id, worker_id)
);
CREATE INDEX builder_workers_worker ON buildmaster_private.builder_workers (worker_id);

-- Source changes. change_uuid is chosen by whoever submits the change (API
-- idempotency key, webhook delivery id, CLI), so a retried insert finds the
-- row an earlier attempt committed instead of creating a second one.
CREATE TABLE buildmaster_private.changes (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    change_uuid uuid        NOT NULL UNIQUE,
    author      text        NOT NULL,
    committer   text,
    comments    text        NOT NULL DEFAULT '',
    repository  text        NOT NULL DEFAULT '',
    project     text        NOT NULL DEFAULT '',
    branch      text,
    revision    text,
    revlink     text,
    category    text,
    codebase    text        NOT NULL DEFAULT '',
    -- Where the change came from: api, github, gitlab, cli.
    source      text        NOT NULL DEFAULT 'api',
    when_at     timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    properties  jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object')
);
CREATE INDEX changes_branch ON buildmaster_private.changes (branch, id);
CREATE INDEX changes_created ON buildmaster_private.changes (created_at);

CREATE TABLE buildmaster_private.change_files (
    change_id bigint NOT NULL REFERENCES buildmaster_private.changes (id) ON DELETE CASCADE,
    filename  text   NOT NULL,
    PRIMARY KEY (change_id, filename)
);

-- Schedulers from the configuration. Their durable state lives here and in
-- the two tables below, so a restarted master resumes where it stopped.
CREATE TABLE buildmaster_private.schedulers (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL UNIQUE CHECK (name <> ''),
    kind        text        NOT NULL CHECK (kind IN ('single-branch', 'any-branch', 'periodic',
                                                     'nightly', 'force', 'triggerable', 'dependent')),
    enabled     boolean     NOT NULL DEFAULT true,
    configured  boolean     NOT NULL DEFAULT true,
    config      jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    -- Next timed run (periodic, nightly); NULL for schedulers without a clock.
    next_run_at timestamptz,
    -- Last change id this scheduler has looked at.
    last_change_id bigint   NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Free-form durable state of a scheduler, one value per key.
CREATE TABLE buildmaster_private.scheduler_state (
    scheduler_id bigint      NOT NULL REFERENCES buildmaster_private.schedulers (id) ON DELETE CASCADE,
    key          text        NOT NULL,
    value        jsonb       NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scheduler_id, key)
);

-- Changes a scheduler has accepted but not yet turned into a buildset (the
-- tree-stable wait). Removed in the transaction that creates the buildset.
CREATE TABLE buildmaster_private.scheduler_changes (
    scheduler_id bigint  NOT NULL REFERENCES buildmaster_private.schedulers (id) ON DELETE CASCADE,
    change_id    bigint  NOT NULL REFERENCES buildmaster_private.changes (id) ON DELETE CASCADE,
    important    boolean NOT NULL DEFAULT true,
    PRIMARY KEY (scheduler_id, change_id)
);
CREATE INDEX scheduler_changes_change ON buildmaster_private.scheduler_changes (change_id);

-- A buildset: one reason to build, one request per builder.
CREATE TABLE buildmaster_private.buildsets (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Chosen by the submitter: a retried submission finds the first one.
    buildset_uuid      uuid        NOT NULL UNIQUE,
    reason             text        NOT NULL DEFAULT '',
    external_id        text,
    scheduler_id       bigint      REFERENCES buildmaster_private.schedulers (id),
    -- Set for triggered/dependent buildsets: the buildset that caused this one.
    parent_buildset_id bigint      REFERENCES buildmaster_private.buildsets (id),
    submitted_at       timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    results            smallint    CHECK (results BETWEEN 0 AND 6),
    CHECK ((completed_at IS NULL) = (results IS NULL)),
    CHECK (completed_at IS NULL OR completed_at >= submitted_at)
);
CREATE INDEX buildsets_submitted ON buildmaster_private.buildsets (submitted_at);
CREATE INDEX buildsets_incomplete ON buildmaster_private.buildsets (id) WHERE completed_at IS NULL;
CREATE INDEX buildsets_parent ON buildmaster_private.buildsets (parent_buildset_id)
    WHERE parent_buildset_id IS NOT NULL;

-- What a buildset builds: one source stamp per codebase.
CREATE TABLE buildmaster_private.sourcestamps (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    buildset_id bigint NOT NULL REFERENCES buildmaster_private.buildsets (id) ON DELETE CASCADE,
    codebase    text   NOT NULL DEFAULT '',
    repository  text   NOT NULL DEFAULT '',
    project     text   NOT NULL DEFAULT '',
    branch      text,
    revision    text,
    UNIQUE (buildset_id, codebase)
);

-- The changes a source stamp includes.
CREATE TABLE buildmaster_private.sourcestamp_changes (
    sourcestamp_id bigint NOT NULL REFERENCES buildmaster_private.sourcestamps (id) ON DELETE CASCADE,
    change_id      bigint NOT NULL REFERENCES buildmaster_private.changes (id),
    PRIMARY KEY (sourcestamp_id, change_id)
);
CREATE INDEX sourcestamp_changes_change ON buildmaster_private.sourcestamp_changes (change_id);

CREATE TABLE buildmaster_private.buildset_properties (
    buildset_id bigint NOT NULL REFERENCES buildmaster_private.buildsets (id) ON DELETE CASCADE,
    name        text   NOT NULL,
    value       jsonb  NOT NULL,
    source      text   NOT NULL DEFAULT '',
    PRIMARY KEY (buildset_id, name)
);

-- The queue. Claim columns are inline; the CHECKs tie each state to the
-- columns it requires, so no code path can leave a half-claimed row.
CREATE TABLE buildmaster_private.build_requests (
    id                   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    buildset_id          bigint      NOT NULL REFERENCES buildmaster_private.buildsets (id),
    builder_id           bigint      NOT NULL REFERENCES buildmaster_private.builders (id),
    priority             integer     NOT NULL DEFAULT 0,
    state                text        NOT NULL DEFAULT 'pending'
                                     CHECK (state IN ('pending', 'claimed', 'completed', 'cancelled')),
    submitted_at         timestamptz NOT NULL DEFAULT now(),
    claimed_by_master_id bigint      REFERENCES buildmaster_private.masters (id),
    claimed_at           timestamptz,
    completed_at         timestamptz,
    results              smallint    CHECK (results BETWEEN 0 AND 6),
    UNIQUE (buildset_id, builder_id),
    CONSTRAINT build_requests_pending_unclaimed CHECK (
        state <> 'pending'
        OR (claimed_by_master_id IS NULL AND claimed_at IS NULL AND completed_at IS NULL AND results IS NULL)),
    CONSTRAINT build_requests_claimed_has_owner CHECK (
        state <> 'claimed'
        OR (claimed_by_master_id IS NOT NULL AND claimed_at IS NOT NULL AND completed_at IS NULL AND results IS NULL)),
    CONSTRAINT build_requests_completed_has_result CHECK (
        state NOT IN ('completed', 'cancelled') OR (completed_at IS NOT NULL AND results IS NOT NULL)),
    CONSTRAINT build_requests_cancelled_result CHECK (state <> 'cancelled' OR results = 6)
);
-- The claim query: oldest pending request of the highest priority per builder.
CREATE INDEX build_requests_claimable ON buildmaster_private.build_requests
    (builder_id, priority DESC, submitted_at, id) WHERE state = 'pending';
-- Reclaiming a dead master's work, and a master's own restart clean-up.
CREATE INDEX build_requests_claimed_by ON buildmaster_private.build_requests (claimed_by_master_id)
    WHERE state = 'claimed';
CREATE INDEX build_requests_builder ON buildmaster_private.build_requests (builder_id);
CREATE INDEX build_requests_submitted ON buildmaster_private.build_requests (submitted_at);

CREATE TABLE buildmaster_private.builds (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Chosen by the master before the insert: a retried insert finds the row.
    build_uuid       uuid        NOT NULL UNIQUE,
    builder_id       bigint      NOT NULL REFERENCES buildmaster_private.builders (id),
    number           integer     NOT NULL CHECK (number > 0),
    build_request_id bigint      NOT NULL REFERENCES buildmaster_private.build_requests (id),
    worker_id        bigint      REFERENCES buildmaster_private.workers (id),
    master_id        bigint      NOT NULL REFERENCES buildmaster_private.masters (id),
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    state_string     text        NOT NULL DEFAULT '',
    results          smallint    CHECK (results BETWEEN 0 AND 6),
    UNIQUE (builder_id, number),
    CHECK ((finished_at IS NULL) = (results IS NULL)),
    CHECK (finished_at IS NULL OR finished_at >= started_at)
);
CREATE INDEX builds_request ON buildmaster_private.builds (build_request_id);
CREATE INDEX builds_started ON buildmaster_private.builds (started_at);
CREATE INDEX builds_builder_started ON buildmaster_private.builds (builder_id, started_at);
CREATE INDEX builds_unfinished ON buildmaster_private.builds (master_id) WHERE finished_at IS NULL;

CREATE TABLE buildmaster_private.build_properties (
    build_id bigint NOT NULL REFERENCES buildmaster_private.builds (id) ON DELETE CASCADE,
    name     text   NOT NULL,
    value    jsonb  NOT NULL,
    source   text   NOT NULL DEFAULT '',
    PRIMARY KEY (build_id, name)
);

CREATE TABLE buildmaster_private.steps (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    build_id     bigint      NOT NULL REFERENCES buildmaster_private.builds (id) ON DELETE CASCADE,
    number       integer     NOT NULL CHECK (number >= 0),
    name         text        NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz,
    state_string text        NOT NULL DEFAULT '',
    results      smallint    CHECK (results BETWEEN 0 AND 6),
    -- The step is always run, even after a failure or a cancel.
    always_run   boolean     NOT NULL DEFAULT false,
    UNIQUE (build_id, number),
    CHECK ((finished_at IS NULL) = (results IS NULL)),
    CHECK (finished_at IS NULL OR (started_at IS NOT NULL AND finished_at >= started_at))
);

CREATE TABLE buildmaster_private.logs (
    id        bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    step_id   bigint  NOT NULL REFERENCES buildmaster_private.steps (id) ON DELETE CASCADE,
    name      text    NOT NULL,
    slug      text    NOT NULL,
    -- s: stdio (each line prefixed o/e/h for stdout, stderr, header),
    -- t: plain text, h: HTML.
    type      text    NOT NULL DEFAULT 's' CHECK (type IN ('s', 't', 'h')),
    num_lines integer NOT NULL DEFAULT 0 CHECK (num_lines >= 0),
    complete  boolean NOT NULL DEFAULT false,
    UNIQUE (step_id, slug)
);

-- Log text in chunks of whole lines. The key (log, first line) makes an
-- append retried after an ambiguous commit a no-op. PostgreSQL compresses
-- large values itself (TOAST), so content stays plain text for readers.
CREATE TABLE buildmaster_private.log_chunks (
    log_id     bigint  NOT NULL REFERENCES buildmaster_private.logs (id) ON DELETE CASCADE,
    first_line integer NOT NULL CHECK (first_line >= 0),
    last_line  integer NOT NULL,
    content    text    NOT NULL,
    PRIMARY KEY (log_id, first_line),
    CHECK (last_line >= first_line)
);

-- Answers to API writes that carried an Idempotency-Key header: a retried
-- request gets the first answer and changes nothing.
CREATE TABLE buildmaster_private.idempotency_keys (
    scope           text        NOT NULL,
    key             text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash    text        NOT NULL,
    response_status smallint    NOT NULL CHECK (response_status BETWEEN 100 AND 599),
    response_body   jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON buildmaster_private.idempotency_keys (created_at);

-- The published contract lives in its own schema (views only, see views/).
CREATE SCHEMA IF NOT EXISTS buildmaster_v1;

-- Roles are shared by every database of the server: create them only when
-- missing, and tolerate another database's migration creating them at the
-- same moment.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'buildmaster_reader') THEN
        BEGIN
            CREATE ROLE buildmaster_reader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$roles$;

REVOKE ALL ON SCHEMA buildmaster_v1 FROM PUBLIC;
GRANT USAGE ON SCHEMA buildmaster_v1 TO buildmaster_reader;
