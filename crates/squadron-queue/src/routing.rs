//! Which named queue each kind of task runs on.

use std::collections::BTreeMap;
use std::sync::Arc;

/// SQUAD's queue names, kept so that operators recognise them; every kind
/// defaults to one of them.
pub const SQUAD_QUEUES: [&str; 8] = [
    "ci_poll",
    "ci_fetch",
    "ci_fetch_postprocess",
    "ci_quick",
    "core_postprocess",
    "core_notification",
    "core_quick",
    "core_reporting",
];

/// Routes from kind to queue that override the kinds' defaults (from the
/// configuration). Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes(Arc<BTreeMap<String, String>>);

impl Routes {
    /// Routes with these overrides, `kind → queue`.
    pub fn new(overrides: BTreeMap<String, String>) -> Routes {
        Routes(Arc::new(overrides))
    }

    /// The queue for `kind`, whose own default is `default_queue`.
    pub fn queue_for<'a>(&'a self, kind: &str, default_queue: &'a str) -> &'a str {
        self.0.get(kind).map_or(default_queue, String::as_str)
    }

    /// Every queue the routes send work to, and SQUAD's: the queues an
    /// operator sees listed even when they are empty.
    pub fn known_queues(&self, defaults: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut queues: Vec<String> = SQUAD_QUEUES.iter().map(|q| q.to_string()).collect();
        queues.extend(self.0.values().cloned());
        queues.extend(defaults);
        queues.sort();
        queues.dedup();
        queues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_defaults() {
        let routes = Routes::new(BTreeMap::from([("fetch".to_string(), "big_fetch".to_string())]));
        assert_eq!(routes.queue_for("fetch", "ci_fetch"), "big_fetch");
        assert_eq!(routes.queue_for("poll", "ci_poll"), "ci_poll");
        let known = routes.known_queues(["extra".to_string()]);
        assert!(known.contains(&"big_fetch".to_string()));
        assert!(known.contains(&"extra".to_string()));
        assert!(known.contains(&"core_reporting".to_string()));
        assert_eq!(known.len(), 10);
    }
}
