-- The CI pipeline's bookkeeping on test jobs.

-- Recorded before a job is handed to its lab and embedded in what is sent,
-- so that a submission retried after a crash first looks the job up in the
-- lab instead of creating it twice.
ALTER TABLE testjobs ADD COLUMN submission_key TEXT;
-- The lab's raw results as fetched (a blob key).
ALTER TABLE testjobs ADD COLUMN results_blob TEXT;
-- A results payload pushed by the lab (SQUAD's ResultsInput), consumed by
-- the next fetch.
ALTER TABLE testjobs ADD COLUMN results_input TEXT;

-- The poll: a backend's submitted jobs not fetched yet.
CREATE INDEX testjobs_backend_pending ON testjobs (backend_id, submitted, fetched);
CREATE INDEX testjobs_parent_job ON testjobs (parent_job_id);
CREATE INDEX testjobs_target_project ON testjobs (target_id, id);
CREATE INDEX testjobs_results_blob ON testjobs (results_blob) WHERE results_blob IS NOT NULL;
