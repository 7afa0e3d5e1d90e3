-- Email notifications: who receives them (SQUAD's Subscription and
-- AdminSubscription), how they look (EmailTemplate), what was sent
-- (one row per email, recorded before it is sent), and the post-processing
-- a build waits for before it counts as finished.

CREATE TABLE email_templates (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- Jinja2 (one line); NULL or empty: the default subject.
    subject TEXT,
    plain_text TEXT NOT NULL,
    html TEXT
);

ALTER TABLE projects ADD COLUMN custom_email_template_id INTEGER REFERENCES email_templates (id) ON DELETE SET NULL;

-- A project's build notifications go to a user (their current address) or
-- to a bare address, as the subscription's strategy says.
CREATE TABLE subscriptions (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
    email TEXT,
    notification_strategy TEXT NOT NULL DEFAULT 'all'
        CHECK (notification_strategy IN ('all', 'change', 'regression', 'error')),
    CHECK ((user_id IS NULL) <> (email IS NULL))
);
CREATE UNIQUE INDEX subscriptions_project_user ON subscriptions (project_id, user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX subscriptions_project_email ON subscriptions (project_id, email) WHERE email IS NOT NULL;

-- Receive moderation previews and the failed-test-jobs emails.
CREATE TABLE admin_subscriptions (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    UNIQUE (project_id, email)
);

-- One row per email of a build event (kind: 'failed_jobs', 'preview' or
-- 'build'), inserted before the first attempt; every attempt sends the same
-- Message-ID, so a receiver (or a test) can tell a resend from a new email.
CREATE TABLE notification_deliveries (
    id INTEGER PRIMARY KEY,
    build_id INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    generation INTEGER NOT NULL,
    kind TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_attempt_at TEXT,
    sent_at TEXT,
    error TEXT,
    UNIQUE (build_id, event, generation, kind)
);

-- Post-processing (a plugin's work on a run) that the build waits for: a
-- build with rows here is not finished. Inserted in the transaction that
-- enqueues the plugin's task, deleted in that task's last step.
CREATE TABLE pending_postprocess (
    testrun_id INTEGER NOT NULL REFERENCES testruns (id) ON DELETE CASCADE,
    plugin TEXT NOT NULL,
    build_id INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (testrun_id, plugin)
);
CREATE INDEX pending_postprocess_build ON pending_postprocess (build_id);
