-- SQUAD's Annotation: a note on one build (at most one per build), shown
-- with the build and on metric charts.
CREATE TABLE annotations (
    id INTEGER PRIMARY KEY,
    build_id INTEGER NOT NULL UNIQUE REFERENCES builds (id) ON DELETE CASCADE,
    description TEXT
);
