-- Data retention (SQUAD's cleanup_old_builds): what a deleted build leaves
-- behind, and the indexes the retention tasks and the blob sweep read.

-- SQUAD's BuildPlaceholder: a build deleted by data retention leaves its
-- version here, so that it can be told apart from one that never existed.
-- Unique per (project, version) as SQUAD's; deleting a version again (its
-- build was submitted anew after the first deletion) updates the row's
-- time instead of failing, where SQUAD's task fails every day.
CREATE TABLE build_placeholders (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    build_deleted_at TEXT NOT NULL,
    UNIQUE (project_id, version)
);

-- The builds retention may delete: a project's, by creation time, without
-- keep_data.
CREATE INDEX builds_project_created ON builds (project_id, created_at) WHERE NOT keep_data;

-- The blob sweep asks, for each blob file older than its grace period,
-- whether any row still refers to its key: every column holding blob keys
-- is indexed for that question.
CREATE INDEX testruns_tests_file ON testruns (tests_file) WHERE tests_file IS NOT NULL;
CREATE INDEX testruns_metrics_file ON testruns (metrics_file) WHERE metrics_file IS NOT NULL;
CREATE INDEX testruns_log_file ON testruns (log_file) WHERE log_file IS NOT NULL;
CREATE INDEX attachments_blob ON attachments (blob);
