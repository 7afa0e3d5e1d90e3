-- squadron foundation schema (PostgreSQL). Keep in step with ../sqlite/.
-- Names and fields follow SQUAD's data model; comments say where they differ.

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL DEFAULT '',
    first_name TEXT NOT NULL DEFAULT '',
    last_name TEXT NOT NULL DEFAULT '',
    is_superuser BOOLEAN NOT NULL DEFAULT FALSE,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    date_joined TIMESTAMPTZ NOT NULL
);

-- One API token per user, as SQUAD's (DRF authtoken): 40 hex characters.
CREATE TABLE tokens (
    key TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    created TIMESTAMPTZ NOT NULL
);

CREATE TABLE groups (
    id BIGSERIAL PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT,
    description TEXT,
    settings TEXT
);

CREATE TABLE group_members (
    id BIGSERIAL PRIMARY KEY,
    group_id BIGINT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    access TEXT NOT NULL DEFAULT 'member' CHECK (access IN ('member', 'submitter', 'privileged', 'admin')),
    member_since TIMESTAMPTZ NOT NULL,
    UNIQUE (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

CREATE TABLE projects (
    id BIGSERIAL PRIMARY KEY,
    group_id BIGINT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    slug TEXT NOT NULL,
    name TEXT,
    is_public BOOLEAN NOT NULL DEFAULT TRUE,
    html_mail BOOLEAN NOT NULL DEFAULT TRUE,
    moderate_notifications BOOLEAN NOT NULL DEFAULT FALSE,
    description TEXT,
    important_metadata_keys TEXT,
    datetime TIMESTAMPTZ NOT NULL,
    -- Comma-separated plugin names, stored verbatim (SQUAD's PluginListField).
    enabled_plugins_list TEXT,
    wait_before_notification BIGINT,
    notification_timeout BIGINT,
    data_retention_days BIGINT NOT NULL DEFAULT 0,
    project_settings TEXT NOT NULL DEFAULT '{}',
    is_archived BOOLEAN NOT NULL DEFAULT FALSE,
    force_finishing_builds_on_timeout BOOLEAN NOT NULL DEFAULT FALSE,
    build_confidence_count BIGINT NOT NULL DEFAULT 20,
    build_confidence_threshold BIGINT NOT NULL DEFAULT 90,
    UNIQUE (group_id, slug)
);

CREATE TABLE environments (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    slug TEXT NOT NULL,
    name TEXT,
    expected_test_runs BIGINT DEFAULT 0,
    description TEXT,
    UNIQUE (project_id, slug)
);

CREATE TABLE patch_sources (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    username TEXT NOT NULL DEFAULT '',
    password TEXT,
    url TEXT NOT NULL,
    token TEXT,
    implementation TEXT NOT NULL
);

CREATE TABLE builds (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    datetime TIMESTAMPTZ NOT NULL,
    patch_source_id BIGINT REFERENCES patch_sources (id) ON DELETE SET NULL,
    patch_baseline_id BIGINT REFERENCES builds (id) ON DELETE SET NULL,
    patch_id TEXT,
    patch_url TEXT,
    patch_notified BOOLEAN NOT NULL DEFAULT FALSE,
    keep_data BOOLEAN NOT NULL DEFAULT FALSE,
    is_release BOOLEAN NOT NULL DEFAULT FALSE,
    release_label TEXT,
    UNIQUE (project_id, version)
);
CREATE INDEX builds_project_datetime ON builds (project_id, datetime);

-- Outgoing webhooks of a build (SQUAD attaches them through a generic
-- relation; squadron only ever attaches them to builds).
CREATE TABLE callbacks (
    id BIGSERIAL PRIMARY KEY,
    build_id BIGINT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    method TEXT NOT NULL DEFAULT 'post',
    event TEXT NOT NULL DEFAULT 'on_build_finished',
    headers TEXT,
    payload TEXT,
    payload_is_json BOOLEAN NOT NULL DEFAULT TRUE,
    is_sent BOOLEAN NOT NULL DEFAULT FALSE,
    record_response BOOLEAN NOT NULL DEFAULT FALSE,
    response_code BIGINT,
    response_content TEXT,
    UNIQUE (build_id, url, event)
);

CREATE TABLE testruns (
    id BIGSERIAL PRIMARY KEY,
    build_id BIGINT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    environment_id BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    datetime TIMESTAMPTZ NOT NULL,
    metadata_file TEXT,
    -- Blob keys of the files as submitted.
    tests_file TEXT,
    metrics_file TEXT,
    log_file TEXT,
    completed BOOLEAN NOT NULL DEFAULT TRUE,
    build_url TEXT,
    job_id TEXT,
    job_status TEXT,
    job_url TEXT,
    resubmit_url TEXT,
    data_processed BOOLEAN NOT NULL DEFAULT FALSE,
    status_recorded BOOLEAN NOT NULL DEFAULT FALSE,
    -- A run is hidden while it is being ingested; see DESIGN.md §3.
    visible BOOLEAN NOT NULL DEFAULT FALSE,
    ingest_owner TEXT,
    ingest_heartbeat_at TIMESTAMPTZ,
    ingest_created_build BOOLEAN NOT NULL DEFAULT FALSE,
    ingest_created_environment BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX testruns_build ON testruns (build_id);
CREATE INDEX testruns_environment ON testruns (environment_id);
CREATE UNIQUE INDEX testruns_build_job_id ON testruns (build_id, job_id) WHERE visible;
CREATE INDEX testruns_hidden ON testruns (ingest_heartbeat_at) WHERE NOT visible;

CREATE TABLE attachments (
    id BIGSERIAL PRIMARY KEY,
    test_run_id BIGINT NOT NULL REFERENCES testruns (id) ON DELETE CASCADE,
    filename TEXT NOT NULL,
    mimetype TEXT NOT NULL DEFAULT 'application/octet-stream',
    length BIGINT NOT NULL,
    blob TEXT NOT NULL
);
CREATE INDEX attachments_test_run ON attachments (test_run_id);

-- Interned names, global as SQUAD's: kind is 'suite' (name '-'), 'test' or 'metric'.
-- Names are identifiers matched exactly: byte-wise comparison ("C") spares
-- every lookup and insert the database's locale rules.
CREATE TABLE suite_metadata (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT COLLATE "C" NOT NULL CHECK (kind IN ('suite', 'test', 'metric')),
    suite TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    description TEXT,
    instructions_to_reproduce TEXT,
    UNIQUE (kind, suite, name)
);

-- Bumped by every transaction that deletes interned names (removing a
-- rejected run). A batch of tests looks its names up outside its write
-- transaction, then checks in it that the epoch has not moved (taking a
-- share lock on PostgreSQL, which the bump waits for); if it has, it looks
-- them up again. So no test can refer to a name deleted meanwhile.
CREATE TABLE name_epoch (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO name_epoch (id, epoch) VALUES (1, 0);

CREATE TABLE suites (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    slug TEXT COLLATE "C" NOT NULL,
    name TEXT,
    metadata_id BIGINT REFERENCES suite_metadata (id),
    UNIQUE (project_id, slug)
);
CREATE INDEX suites_metadata ON suites (metadata_id);

CREATE TABLE suite_versions (
    id BIGSERIAL PRIMARY KEY,
    suite_id BIGINT NOT NULL REFERENCES suites (id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    UNIQUE (suite_id, version)
);

CREATE TABLE known_issues (
    id BIGSERIAL PRIMARY KEY,
    title TEXT NOT NULL,
    test_name TEXT NOT NULL,
    url TEXT,
    notes TEXT,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    intermittent BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE known_issue_environments (
    known_issue_id BIGINT NOT NULL REFERENCES known_issues (id) ON DELETE CASCADE,
    environment_id BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    PRIMARY KEY (known_issue_id, environment_id)
);
CREATE INDEX known_issue_environments_environment ON known_issue_environments (environment_id);

-- A test is a few integers: its name lives in suite_metadata. build_id and
-- environment_id are denormalised from the run, as SQUAD's. There are no
-- foreign keys here: checking them per row halved bulk insert speed on
-- PostgreSQL. Run, build, environment and suite belong to the run that
-- writes and removes them; names are guarded by name_epoch below.
CREATE TABLE tests (
    id BIGSERIAL PRIMARY KEY,
    test_run_id BIGINT NOT NULL,
    suite_id BIGINT NOT NULL,
    metadata_id BIGINT NOT NULL,
    build_id BIGINT NOT NULL,
    environment_id BIGINT NOT NULL,
    result BOOLEAN,
    has_known_issues BOOLEAN,
    log TEXT
);
-- (test_run_id, metadata_id) also serves comparisons, which are per
-- environment and so per run: two runs' tests come out in name order.
CREATE UNIQUE INDEX tests_test_run_metadata ON tests (test_run_id, metadata_id);
-- A run's tests in id order, for paginated listings (without it every page
-- sorts the rest of the run). Entries are appended as a run is written.
CREATE INDEX tests_test_run ON tests (test_run_id, id);
CREATE INDEX tests_metadata ON tests (metadata_id);

CREATE TABLE test_known_issues (
    test_id BIGINT NOT NULL REFERENCES tests (id) ON DELETE CASCADE,
    known_issue_id BIGINT NOT NULL REFERENCES known_issues (id) ON DELETE CASCADE,
    PRIMARY KEY (test_id, known_issue_id)
);
CREATE INDEX test_known_issues_known_issue ON test_known_issues (known_issue_id);

CREATE TABLE metrics (
    id BIGSERIAL PRIMARY KEY,
    test_run_id BIGINT NOT NULL,
    suite_id BIGINT NOT NULL,
    metadata_id BIGINT NOT NULL,
    build_id BIGINT NOT NULL,
    environment_id BIGINT NOT NULL,
    result DOUBLE PRECISION NOT NULL,
    -- Comma-separated measurements, as SQUAD's.
    measurements TEXT NOT NULL,
    unit TEXT,
    is_outlier BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX metrics_test_run_metadata ON metrics (test_run_id, metadata_id);
CREATE INDEX metrics_metadata ON metrics (metadata_id);

-- Per-run counts, per suite and (suite_id NULL) for the whole run. A run
-- being ingested holds a placeholder row per suite it uses, so a suite
-- without status rows is used by no run.
CREATE TABLE statuses (
    id BIGSERIAL PRIMARY KEY,
    test_run_id BIGINT NOT NULL REFERENCES testruns (id),
    suite_id BIGINT REFERENCES suites (id),
    suite_version_id BIGINT REFERENCES suite_versions (id),
    tests_pass BIGINT NOT NULL DEFAULT 0,
    tests_fail BIGINT NOT NULL DEFAULT 0,
    tests_xfail BIGINT NOT NULL DEFAULT 0,
    tests_skip BIGINT NOT NULL DEFAULT 0,
    metrics_summary DOUBLE PRECISION NOT NULL DEFAULT 0,
    has_metrics BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX statuses_test_run_suite ON statuses (test_run_id, suite_id);
CREATE UNIQUE INDEX statuses_test_run_total ON statuses (test_run_id) WHERE suite_id IS NULL;
CREATE INDEX statuses_suite ON statuses (suite_id);

CREATE TABLE backends (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    username TEXT NOT NULL DEFAULT '',
    token TEXT NOT NULL DEFAULT '',
    implementation_type TEXT NOT NULL,
    backend_settings TEXT,
    -- Seconds (SQUAD stores minutes; the API keeps minutes).
    poll_interval BIGINT NOT NULL DEFAULT 3600,
    max_fetch_attempts BIGINT NOT NULL DEFAULT 3,
    poll_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    listen_enabled BOOLEAN NOT NULL DEFAULT TRUE
);

CREATE TABLE testjobs (
    id BIGSERIAL PRIMARY KEY,
    backend_id BIGINT NOT NULL REFERENCES backends (id),
    definition TEXT,
    name TEXT,
    target_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    target_build_id BIGINT REFERENCES builds (id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    submitted_at TIMESTAMPTZ,
    fetched_at TIMESTAMPTZ,
    started_at TIMESTAMPTZ,
    ended_at TIMESTAMPTZ,
    last_fetch_attempt TIMESTAMPTZ,
    submitted BOOLEAN NOT NULL DEFAULT FALSE,
    fetched BOOLEAN NOT NULL DEFAULT FALSE,
    fetch_attempts BIGINT NOT NULL DEFAULT 0,
    failure TEXT,
    can_resubmit BOOLEAN NOT NULL DEFAULT FALSE,
    resubmitted_count BIGINT NOT NULL DEFAULT 0,
    parent_job_id BIGINT REFERENCES testjobs (id) ON DELETE SET NULL,
    job_id TEXT,
    job_status TEXT,
    testrun_id BIGINT REFERENCES testruns (id) ON DELETE SET NULL
);
CREATE INDEX testjobs_target_build ON testjobs (target_build_id);
CREATE INDEX testjobs_job_id ON testjobs (job_id);
CREATE INDEX testjobs_pending ON testjobs (submitted, fetched);
