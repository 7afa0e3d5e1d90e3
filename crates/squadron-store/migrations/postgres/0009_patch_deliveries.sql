-- Every attempt at reporting a patch build to its patch source (GitHub
-- commit status, Gerrit review), recorded before the request is sent; all
-- attempts of one stage ('created', 'finished') carry the same key.
CREATE TABLE patch_deliveries (
    id BIGSERIAL PRIMARY KEY,
    build_id BIGINT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    attempted_at TIMESTAMPTZ NOT NULL,
    error TEXT
);
CREATE INDEX patch_deliveries_build ON patch_deliveries (build_id);
