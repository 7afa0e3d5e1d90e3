-- SQUAD's DelayedReport: a build's report rendered once for a set of
-- parameters (`/api/builds/<id>/report/` and `/email/`), kept
-- `data_retention_days` days, then optionally emailed to
-- `email_recipient` and POSTed to `callback`. The request that creates a
-- row enqueues the task that renders it, in the same transaction.
--
-- AUTOINCREMENT: an id is never given again after its row is removed, as
-- the Message-ID of a report's email and the Idempotency-Key of its
-- callback are made from it. Its email is recorded in
-- notification_deliveries (event 'report', generation = the report's id).
CREATE TABLE delayed_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    build_id INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    -- The build compared with (SQUAD points at its status); NULL: the
    -- build's own baseline.
    baseline_id INTEGER REFERENCES builds (id) ON DELETE CASCADE,
    -- 'text/plain' or 'text/html': what `/email/` answers with.
    output_format TEXT NOT NULL,
    -- NULL: the default templates.
    template_id INTEGER REFERENCES email_templates (id) ON DELETE CASCADE,
    email_recipient TEXT,
    email_recipient_notified BOOLEAN NOT NULL DEFAULT FALSE,
    callback TEXT,
    callback_token TEXT,
    callback_notified BOOLEAN NOT NULL DEFAULT FALSE,
    data_retention_days INTEGER NOT NULL DEFAULT 5 CHECK (data_retention_days BETWEEN 0 AND 30),
    output_subject TEXT,
    output_text TEXT,
    output_html TEXT,
    -- Why the report could not be made (a JSON object, which is YAML too,
    -- as SQUAD stores it).
    error_message TEXT,
    -- HTTP-like: 200 rendered, 400 template error, 404 build without a
    -- status; NULL while the report waits to be rendered.
    status_code INTEGER,
    created_at TEXT NOT NULL
);
CREATE INDEX delayed_reports_build ON delayed_reports (build_id);
CREATE INDEX delayed_reports_created_at ON delayed_reports (created_at);
