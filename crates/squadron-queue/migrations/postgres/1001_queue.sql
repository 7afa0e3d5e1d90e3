-- The durable task queue (crate squadron-queue). Its migrations number
-- from 1001 so that they never collide with the store's.
--
-- Every time is in microseconds since the Unix epoch, read from the
-- database's clock (the queue_clock view), never from a worker's.

CREATE VIEW queue_clock AS SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT) AS now_us;

CREATE TABLE tasks (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    queue TEXT NOT NULL,
    -- The task's arguments, JSON.
    args TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('available', 'scheduled', 'retryable', 'running', 'completed', 'failed', 'cancelled')),
    -- Higher runs first.
    priority SMALLINT NOT NULL DEFAULT 0,
    run_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    unique_key TEXT,
    -- Set by an enqueue of the same unique key while the task runs: run
    -- it once more when it finishes.
    rerun BOOLEAN NOT NULL DEFAULT FALSE,
    -- The last committed step's cursor, JSON.
    checkpoint TEXT,
    lease_owner TEXT,
    -- Bumped by every claim; a write under a lease commits only while the
    -- token is still the task's.
    lease_token BIGINT NOT NULL DEFAULT 0,
    lease_expires_at BIGINT,
    claimed_at BIGINT,
    finished_at BIGINT,
    rescues INTEGER NOT NULL DEFAULT 0,
    releases INTEGER NOT NULL DEFAULT 0,
    releases_since_checkpoint INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);

CREATE INDEX tasks_claim ON tasks (queue, priority DESC, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
CREATE UNIQUE INDEX tasks_unique_pending ON tasks (unique_key)
    WHERE state IN ('available', 'scheduled', 'retryable', 'running');
CREATE INDEX tasks_lease_owner ON tasks (lease_owner) WHERE state = 'running';
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE state IN ('completed', 'failed', 'cancelled');

-- One row per period of a periodic schedule: the scheduler that inserts it
-- enqueues that period's task, in the same transaction.
CREATE TABLE periodic_runs (
    schedule TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    task_id BIGINT NOT NULL,
    PRIMARY KEY (schedule, period_start)
);
