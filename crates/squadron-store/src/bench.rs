//! The raw ceiling of ingestion, for `squadron bench ingest`: the same
//! rows written with the same statements, batch size and indexes as a
//! submission, but with no HTTP, no parsing and no pipelining.

use std::time::{Duration, Instant};

use crate::ingest::batch::{insert_tests, Conflict, TestRow};
use crate::ingest::names::{intern_missing, NameKind};
use crate::ingest::run::HiddenRun;
use crate::ingest::{Submission, MAX_BATCH_ROWS};
use crate::{Store, StoreError};

/// Writes `tests` tests (named `suiteN/testM`, over `suites` suites taking
/// turns if `interleaved`, else each holding consecutive tests; every
/// hundredth failing with a log) into a new run of `project`, looking up
/// the names first as a submission does; returns how long it took.
pub async fn raw_insert(
    store: &Store,
    project_id: i64,
    build: &str,
    tests: usize,
    suites: usize,
    interleaved: bool,
) -> Result<Duration, StoreError> {
    let submission = Submission {
        project_id,
        build_version: build.to_string(),
        environment_slug: "raw".to_string(),
        metadata: Default::default(),
        tests_file: None,
        metrics_file: None,
        log_file: None,
        attachments: Vec::new(),
        completed: true,
    };
    let mut run = HiddenRun::begin(store, &submission, None).await.map_err(|e| StoreError::Invalid(e.to_string()))?;
    let log = "x".repeat(200);
    let started = Instant::now();
    for start in (0..tests).step_by(MAX_BATCH_ROWS) {
        let end = (start + MAX_BATCH_ROWS).min(tests);
        let suite = |i: usize| if interleaved { i % suites } else { i * suites / tests.max(1) };
        let names: Vec<(String, String)> =
            (start..end).map(|i| (format!("suite{}", suite(i)), format!("test{i}"))).collect();
        let keys: Vec<(&str, &str)> = names.iter().map(|(s, n)| (s.as_str(), n.as_str())).collect();
        let mut ids = store.lookup_names(NameKind::Test, &keys).await?;
        let mut tx = store.begin_write().await?;
        let slugs: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let suite_ids = run.ensure_suites(&mut tx, &slugs).await?;
        intern_missing(&mut tx, NameKind::Test, &keys, &mut ids).await?;
        let rows: Vec<TestRow> = (start..end)
            .enumerate()
            .map(|(j, i)| TestRow {
                suite_id: suite_ids[j],
                metadata_id: ids[j].expect("interned"),
                result: Some(i % 100 != 0),
                has_known_issues: false,
                log: (i % 100 == 0).then_some(log.as_str()),
            })
            .collect();
        insert_tests(&mut tx, run.ids(), &rows, Conflict::Ignore, false).await?;
        tx.commit().await?;
    }
    Ok(started.elapsed())
}
