-- SQUAD's MetricThreshold: with a value, a limit reported when exceeded;
-- without one, the direction in which a metric improves, which is what
-- classifies its changes between builds as regressions or fixes.
CREATE TABLE metric_thresholds (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    -- NULL: every environment of the project.
    environment_id BIGINT REFERENCES environments (id) ON DELETE CASCADE,
    -- A full metric name; `*` matches any run of characters.
    name TEXT NOT NULL,
    value DOUBLE PRECISION,
    is_higher_better BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX metric_thresholds_unique ON metric_thresholds (project_id, COALESCE(environment_id, 0), name);
