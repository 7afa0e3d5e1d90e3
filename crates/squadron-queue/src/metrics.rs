//! The queue's Prometheus metrics: what a worker did, and the depth of
//! every queue read from the database when scraped.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::admin::QueueDepth;

/// Labels naming a queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue.
    pub queue: String,
}

/// Labels naming a kind of task.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The kind.
    pub kind: String,
}

/// Labels naming a kind of task and how a run of it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The kind.
    pub kind: String,
    /// `completed`, `retried`, `failed`, `snoozed`, `released` or `fenced`.
    pub outcome: String,
}

/// Labels naming a queue and a task state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DepthLabels {
    /// The queue.
    pub queue: String,
    /// The state.
    pub state: String,
}

fn seconds_histogram() -> Histogram {
    // 100 µs to ~ 30 min.
    Histogram::new(exponential_buckets(0.0001, 2.5, 18))
}

/// The queue's metrics. Cheap to clone; clones share the values.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    claim_latency: Family<QueueLabels, Histogram, fn() -> Histogram>,
    task_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    runs: Family<OutcomeLabels, Counter>,
    rescues: Family<QueueLabels, Counter>,
    releases: Family<QueueLabels, Counter>,
    fenced: Counter,
    depth: Family<DepthLabels, Gauge>,
    oldest_waiting: Family<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("squadron_queue");
        let claim_latency =
            Family::<QueueLabels, Histogram, fn() -> Histogram>::new_with_constructor(seconds_histogram);
        let task_duration = Family::<KindLabels, Histogram, fn() -> Histogram>::new_with_constructor(seconds_histogram);
        let runs = Family::<OutcomeLabels, Counter>::default();
        let rescues = Family::<QueueLabels, Counter>::default();
        let releases = Family::<QueueLabels, Counter>::default();
        let fenced = Counter::default();
        let depth = Family::<DepthLabels, Gauge>::default();
        let oldest_waiting = Family::<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register("claim_seconds", "Time a claim statement took", claim_latency.clone());
        registry.register("task_seconds", "Time a task's handler ran, by kind", task_duration.clone());
        registry.register("runs", "Runs of tasks by kind and how they ended", runs.clone());
        registry.register(
            "rescues",
            "Tasks whose lease had expired, made runnable again by this process",
            rescues.clone(),
        );
        registry.register("releases", "Tasks handed back on shutdown", releases.clone());
        registry.register(
            "fenced_commits_rejected",
            "Writes refused because the lease was no longer this worker's",
            fenced.clone(),
        );
        registry.register("depth", "Tasks by queue and state (read from the database when scraped)", depth.clone());
        registry.register(
            "oldest_waiting_seconds",
            "Age of the oldest task due and waiting, by queue (read from the database when scraped)",
            oldest_waiting.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                claim_latency,
                task_duration,
                runs,
                rescues,
                releases,
                fenced,
                depth,
                oldest_waiting,
            }),
        }
    }
}

impl Metrics {
    pub(crate) fn claimed(&self, queue: &str, took: Duration) {
        self.inner.claim_latency.get_or_create(&QueueLabels { queue: queue.to_string() }).observe(took.as_secs_f64());
    }

    pub(crate) fn ran(&self, kind: &str, outcome: &str, took: Duration) {
        self.inner.task_duration.get_or_create(&KindLabels { kind: kind.to_string() }).observe(took.as_secs_f64());
        self.inner.runs.get_or_create(&OutcomeLabels { kind: kind.to_string(), outcome: outcome.to_string() }).inc();
    }

    pub(crate) fn rescued(&self, queue: &str) {
        self.inner.rescues.get_or_create(&QueueLabels { queue: queue.to_string() }).inc();
    }

    pub(crate) fn released(&self, queue: &str) {
        self.inner.releases.get_or_create(&QueueLabels { queue: queue.to_string() }).inc();
    }

    pub(crate) fn fenced(&self) {
        self.inner.fenced.inc();
    }

    /// How many fenced commits were rejected so far.
    pub fn fenced_commits_rejected(&self) -> u64 {
        self.inner.fenced.get()
    }

    /// Replaces the depth gauges with a fresh reading of the database.
    pub fn set_depths(&self, depths: &[QueueDepth]) {
        self.inner.depth.clear();
        self.inner.oldest_waiting.clear();
        for d in depths {
            for (state, count) in &d.states {
                let labels = DepthLabels { queue: d.queue.clone(), state: state.clone() };
                self.inner.depth.get_or_create(&labels).set(*count);
            }
            let age = d.oldest_waiting.map_or(0.0, |a| a.as_secs_f64());
            self.inner.oldest_waiting.get_or_create(&QueueLabels { queue: d.queue.clone() }).set(age);
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
