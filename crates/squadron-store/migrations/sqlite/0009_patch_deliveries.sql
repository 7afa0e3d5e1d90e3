-- Every attempt at reporting a patch build to its patch source (GitHub
-- commit status, Gerrit review), recorded before the request is sent; all
-- attempts of one stage ('created', 'finished') carry the same key.
CREATE TABLE patch_deliveries (
    id INTEGER PRIMARY KEY,
    build_id INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    attempted_at TEXT NOT NULL,
    error TEXT
);
CREATE INDEX patch_deliveries_build ON patch_deliveries (build_id);
