-- "This must happen once" events of a build, such as its callbacks once it
-- is finished: a row per (build, event, generation), inserted in the
-- transaction that enqueues the task acting on it. A deliberate reset
-- (a resubmitted CI job, say) bumps the build's generation.
ALTER TABLE builds ADD COLUMN event_generation BIGINT NOT NULL DEFAULT 0;

CREATE TABLE build_events (
    id BIGSERIAL PRIMARY KEY,
    build_id BIGINT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    generation BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (build_id, event, generation)
);

-- Every attempt at a callback, recorded before the request is sent; all
-- attempts of one event carry the same idempotency key.
CREATE TABLE callback_deliveries (
    id BIGSERIAL PRIMARY KEY,
    callback_id BIGINT NOT NULL REFERENCES callbacks (id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    attempted_at TIMESTAMPTZ NOT NULL,
    response_code BIGINT,
    error TEXT
);
CREATE INDEX callback_deliveries_callback ON callback_deliveries (callback_id);
