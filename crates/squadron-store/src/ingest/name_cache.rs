//! Ids of interned names this process has already seen, so that a run
//! whose names are known (a repeat build, the same CTS plan on the next
//! build) skips their lookup.
//!
//! An id is only valid while the name epoch it was seen at is current:
//! names are deleted only in transactions that bump the epoch, so the cache
//! is emptied whenever it sees another epoch, and the write that uses the
//! ids checks the epoch again (`revalidate`). Ids are remembered only after
//! the transaction that interned them committed. Keys are 128-bit hashes
//! of (kind, suite, name); the cache holds at most [`NAME_CACHE_ENTRIES`]
//! (24 bytes each: at most ~50 MiB, the table growing as it fills) and
//! starts over when full.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use super::names::{Keys, NameKind};

/// The most names remembered: as many as a table of 2^21 slots holds
/// without growing (a million-test run fits).
pub(crate) const NAME_CACHE_ENTRIES: usize = (1 << 21) / 8 * 7;

/// The cache, shared by a store's clones.
#[derive(Default)]
pub(crate) struct NameCache {
    inner: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    epoch: i64,
    ids: HashMap<Key, i64>,
}

/// Two independent 64-bit hashes of a name (an array, not a `u128`, so
/// that an entry takes 24 bytes, not 32).
type Key = [u64; 2];

fn key(kind: NameKind, suite: &str, name: &str) -> Key {
    let half = |seed: u8| {
        let mut hasher = DefaultHasher::new();
        seed.hash(&mut hasher);
        (kind == NameKind::Test).hash(&mut hasher);
        suite.hash(&mut hasher);
        name.hash(&mut hasher);
        hasher.finish()
    };
    [half(0), half(1)]
}

impl NameCache {
    /// Fills in the ids of `keys` the cache knows at `epoch`; returns how
    /// many it filled.
    pub(crate) fn fill(&self, epoch: i64, kind: NameKind, keys: &Keys<'_>, ids: &mut [Option<i64>]) -> usize {
        let cached = self.inner.lock().expect("name cache lock");
        if cached.epoch != epoch || cached.ids.is_empty() {
            return 0;
        }
        let mut filled = 0;
        for ((suite, name), id) in keys.iter().zip(ids.iter_mut()) {
            if id.is_none() {
                *id = cached.ids.get(&key(kind, suite, name)).copied();
                filled += usize::from(id.is_some());
            }
        }
        filled
    }

    /// Remembers the ids of `keys`, valid at `epoch` (committed).
    pub(crate) fn remember(&self, epoch: i64, kind: NameKind, keys: &Keys<'_>, ids: &[Option<i64>]) {
        let mut cached = self.inner.lock().expect("name cache lock");
        if cached.epoch != epoch {
            cached.ids.clear();
            cached.epoch = epoch;
        }
        if cached.ids.len() + keys.len() > NAME_CACHE_ENTRIES {
            cached.ids.clear();
        }
        for ((suite, name), id) in keys.iter().zip(ids) {
            if let Some(id) = id {
                cached.ids.insert(key(kind, suite, name), *id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_per_epoch_and_kind() {
        let cache = NameCache::default();
        let keys = [("suite", "a"), ("suite", "b")];
        cache.remember(3, NameKind::Test, &keys, &[Some(10), None]);
        let mut ids = [None, None];
        assert_eq!(cache.fill(3, NameKind::Test, &keys, &mut ids), 1);
        assert_eq!(ids, [Some(10), None]);
        let mut metric = [None, None];
        assert_eq!(cache.fill(3, NameKind::Metric, &keys, &mut metric), 0, "another kind is another name");
        let mut later = [None, None];
        assert_eq!(cache.fill(4, NameKind::Test, &keys, &mut later), 0, "names may be gone at another epoch");
        cache.remember(4, NameKind::Test, &keys[1..], &[Some(11)]);
        assert_eq!(cache.fill(4, NameKind::Test, &keys, &mut later), 1, "the old epoch's ids were dropped");
        assert_eq!(later, [None, Some(11)]);
    }
}
