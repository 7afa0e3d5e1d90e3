//! Batches of a run written in the background, in order: each batch is
//! prepared (names looked up, known issues matched) while the ones before
//! it are being written, and PostgreSQL writes several at once. Marks
//! handed in between batches come back once every batch before them is
//! written, so a caller can commit a checkpoint that covers exactly the
//! rows that are stored.

use std::collections::{HashSet, VecDeque};

use squadron_core::submission::{SubmittedMetric, SubmittedTest};
use tokio::task::JoinHandle;

use super::batch::{Named, Prepared, Written};
use super::run::HiddenRun;
use super::{IngestError, StagedRun, ANALYZE_EVERY_ROWS};

/// A batch being written, with what waits for it.
struct InFlight<M> {
    job: JoinHandle<Result<Written, IngestError>>,
    /// Hashes of the batch's `(suite, name)` keys.
    keys: HashSet<u64>,
    /// Marks handed in after this batch and before the next.
    marks: Vec<M>,
}

/// The batches of one run in flight, oldest first.
pub(crate) struct Writes<M> {
    in_flight: VecDeque<InFlight<M>>,
    /// Marks whose batches are all written, not yet handed back.
    done: Vec<M>,
}

impl<M> Writes<M> {
    pub(crate) fn new() -> Self {
        Writes { in_flight: VecDeque::new(), done: Vec::new() }
    }

    /// Prepares `batch` and starts writing it. A batch that shares a name
    /// with one still in flight waits for every earlier batch, so that the
    /// last value of a name wins.
    pub(crate) async fn add<T: Named>(&mut self, run: &mut HiddenRun<'_>, batch: Vec<T>) -> Result<(), IngestError> {
        let known_issues = run.known_issues();
        let prepared = Prepared::new(run.store, &known_issues, batch).await?;
        drop(known_issues);
        let keys: HashSet<u64> = prepared.key_hashes().collect();
        let repeats = self.in_flight.iter().any(|earlier| !earlier.keys.is_disjoint(&keys));
        let room = if repeats { 1 } else { run.store.write_parallelism() };
        while self.in_flight.len() >= room {
            self.absorb_oldest(run).await?;
        }
        let job = tokio::spawn(T::write(run.job(prepared)));
        self.in_flight.push_back(InFlight { job, keys, marks: Vec::new() });
        Ok(())
    }

    /// Hands in `mark`, to come back once every batch added so far is
    /// written.
    pub(crate) fn mark(&mut self, mark: M) {
        match self.in_flight.back_mut() {
            Some(last) => last.marks.push(mark),
            None => self.done.push(mark),
        }
    }

    /// The marks whose batches are written, in the order they came in.
    pub(crate) fn take_done(&mut self) -> Vec<M> {
        std::mem::take(&mut self.done)
    }

    /// Waits for every batch in flight. After an error the other batches
    /// are still waited for, so that a removal of the run that may follow
    /// sees all its rows; the first error is returned.
    pub(crate) async fn drain(&mut self, run: &mut HiddenRun<'_>) -> Result<(), IngestError> {
        let mut failed = None;
        while !self.in_flight.is_empty() {
            if let Err(e) = self.absorb_oldest(run).await {
                failed = failed.or(Some(e));
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn absorb_oldest(&mut self, run: &mut HiddenRun<'_>) -> Result<(), IngestError> {
        let oldest = self.in_flight.pop_front().expect("a batch in flight");
        let written = oldest.job.await.expect("write jobs do not panic")?;
        run.absorb(written).await?;
        self.done.extend(oldest.marks);
        Ok(())
    }
}

/// Appends a plugin's output to a staged run step after step: the rows of
/// a step are written while the next step's are prepared, and each step's
/// mark (its checkpoint, say) comes back once its rows and every earlier
/// row are stored. Call [`StepWriter::finish`] before dropping it.
pub struct StepWriter<'r, 's, M> {
    run: &'r mut StagedRun<'s>,
    writes: Writes<M>,
}

impl<'s> StagedRun<'s> {
    /// A writer appending to this run in steps.
    pub fn step_writer<M>(&mut self) -> StepWriter<'_, 's, M> {
        StepWriter { run: self, writes: Writes::new() }
    }
}

impl<M> StepWriter<'_, '_, M> {
    /// Starts writing a step's tests and metrics (a test or metric already
    /// in the run is overwritten) and hands in its `mark`. Returns the marks
    /// of the steps now fully written, oldest first.
    pub async fn push(
        &mut self,
        tests: Vec<SubmittedTest>,
        metrics: Vec<SubmittedMetric>,
        mark: M,
    ) -> Result<Vec<M>, IngestError> {
        if let Err(e) = self.write(tests, metrics).await {
            let _ = self.writes.drain(&mut self.run.run).await;
            return Err(e);
        }
        self.writes.mark(mark);
        Ok(self.writes.take_done())
    }

    async fn write(&mut self, tests: Vec<SubmittedTest>, metrics: Vec<SubmittedMetric>) -> Result<(), IngestError> {
        let run = &mut *self.run;
        run.unanalyzed_rows += (tests.len() + metrics.len()) as i64;
        if run.unanalyzed_rows >= ANALYZE_EVERY_ROWS {
            run.unanalyzed_rows = 0;
            run.run.store.refresh_statistics(run.run.id, &["suite_metadata", "tests", "metrics"]);
        }
        for batch in in_batches(tests, run.batch_rows) {
            self.writes.add(&mut run.run, batch).await?;
        }
        for batch in in_batches(metrics, run.batch_rows) {
            self.writes.add(&mut run.run, batch).await?;
        }
        Ok(())
    }

    /// Makes the rows pushed next see known issues filed since the run was
    /// opened (see [`StagedRun::add_known_issues`]).
    pub fn add_known_issues(&mut self, issues: &[(i64, String)]) {
        self.run.add_known_issues(issues)
    }

    /// Waits until everything pushed is written; returns the marks not
    /// handed back yet.
    pub async fn finish(mut self) -> Result<Vec<M>, IngestError> {
        self.writes.drain(&mut self.run.run).await?;
        Ok(self.writes.take_done())
    }
}

/// `items` cut into batches of at most `size`.
fn in_batches<T>(items: Vec<T>, size: usize) -> impl Iterator<Item = Vec<T>> {
    let mut items = items.into_iter().peekable();
    std::iter::from_fn(move || {
        items.peek()?;
        Some(items.by_ref().take(size).collect())
    })
}
