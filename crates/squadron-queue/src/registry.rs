//! The kinds of task a worker can run, each with its handler's context.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::job::Job;
use crate::routing::Routes;
use crate::task::{Outcome, Task, TaskError};

/// A handler with its kind's type erased: takes the arguments as JSON.
trait Handler: Send + Sync {
    fn run<'a>(&'a self, args: &'a str, job: &'a mut Job) -> BoxFuture<'a, Result<Outcome, TaskError>>;
}

struct Typed<T: Task> {
    cx: Arc<T::Context>,
}

impl<T: Task> Handler for Typed<T> {
    fn run<'a>(&'a self, args: &'a str, job: &'a mut Job) -> BoxFuture<'a, Result<Outcome, TaskError>> {
        Box::pin(async move {
            let task: T = serde_json::from_str(args)
                .map_err(|e| TaskError::permanent(format!("arguments of {} do not parse: {e}", T::KIND)))?;
            task.run(&self.cx, job).await
        })
    }
}

/// A registered kind.
#[derive(Clone)]
struct Kind {
    default_queue: &'static str,
    handler: Arc<dyn Handler>,
}

/// The kinds a worker runs. Cheap to clone once built.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Kind>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds kind `T`, whose handler gets `cx`.
    pub fn register<T: Task>(&mut self, cx: Arc<T::Context>) -> &mut Registry {
        let kind = Kind { default_queue: T::QUEUE, handler: Arc::new(Typed::<T> { cx }) };
        self.kinds.insert(T::KIND, kind);
        self
    }

    /// The kinds that run on `queue` under `routes`.
    pub fn kinds_on(&self, routes: &Routes, queue: &str) -> Vec<String> {
        self.kinds
            .iter()
            .filter(|(name, kind)| routes.queue_for(name, kind.default_queue) == queue)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Every queue a registered kind runs on under `routes`.
    pub fn queues(&self, routes: &Routes) -> BTreeSet<String> {
        self.kinds.iter().map(|(name, kind)| routes.queue_for(name, kind.default_queue).to_string()).collect()
    }

    /// Runs the handler of `kind`.
    pub(crate) async fn run(&self, kind: &str, args: &str, job: &mut Job) -> Result<Outcome, TaskError> {
        match self.kinds.get(kind) {
            Some(registered) => registered.handler.run(args, job).await,
            None => Err(TaskError::permanent(format!("no handler for task kind {kind:?} in this worker"))),
        }
    }
}
