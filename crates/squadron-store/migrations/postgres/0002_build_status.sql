-- Build status (SQUAD's ProjectStatus) and per-environment summaries (its
-- BuildSummary), derived from the visible runs of a build.

-- Bumped by every transaction that changes which runs a build has (a run
-- published or removed). A status computed from a snapshot is written only
-- if the version it read is still current (compare-and-set).
ALTER TABLE builds ADD COLUMN status_version BIGINT NOT NULL DEFAULT 0;

CREATE TABLE build_status (
    build_id BIGINT PRIMARY KEY REFERENCES builds (id) ON DELETE CASCADE,
    -- The builds.status_version this status reflects.
    computed_version BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    last_updated TIMESTAMPTZ NOT NULL,
    finished BOOLEAN NOT NULL DEFAULT FALSE,
    -- JSON list of why the build is not finished yet.
    finished_reasons TEXT NOT NULL DEFAULT '[]',
    notified BOOLEAN NOT NULL DEFAULT FALSE,
    notified_on_timeout BOOLEAN,
    approved BOOLEAN NOT NULL DEFAULT FALSE,
    tests_pass BIGINT NOT NULL DEFAULT 0,
    tests_fail BIGINT NOT NULL DEFAULT 0,
    tests_xfail BIGINT NOT NULL DEFAULT 0,
    tests_skip BIGINT NOT NULL DEFAULT 0,
    test_runs_total BIGINT NOT NULL DEFAULT 0,
    test_runs_completed BIGINT NOT NULL DEFAULT 0,
    test_runs_incomplete BIGINT NOT NULL DEFAULT 0,
    metrics_summary DOUBLE PRECISION NOT NULL DEFAULT 0,
    has_metrics BOOLEAN NOT NULL DEFAULT FALSE,
    baseline_id BIGINT REFERENCES builds (id) ON DELETE SET NULL,
    -- JSON objects {environment slug: [full test or metric names]}; NULL
    -- until the build is finished and has a baseline.
    regressions TEXT,
    fixes TEXT,
    metric_regressions TEXT,
    metric_fixes TEXT
);
CREATE INDEX build_status_baseline ON build_status (baseline_id);

CREATE TABLE build_summaries (
    build_id BIGINT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    environment_id BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    tests_pass BIGINT NOT NULL DEFAULT 0,
    tests_fail BIGINT NOT NULL DEFAULT 0,
    tests_xfail BIGINT NOT NULL DEFAULT 0,
    tests_skip BIGINT NOT NULL DEFAULT 0,
    test_runs_total BIGINT NOT NULL DEFAULT 0,
    test_runs_completed BIGINT NOT NULL DEFAULT 0,
    test_runs_incomplete BIGINT NOT NULL DEFAULT 0,
    metrics_summary DOUBLE PRECISION NOT NULL DEFAULT 0,
    has_metrics BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (build_id, environment_id)
);
