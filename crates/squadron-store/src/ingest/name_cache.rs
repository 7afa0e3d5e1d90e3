//! The ids of recently used interned names, kept in the process so that a
//! batch whose names are all known needs no lookup in the database: the
//! next build of a project, or another environment of the same build,
//! names the same tests.
//!
//! An entry is valid for one name epoch (see `name_epoch` in the schema):
//! names are only ever deleted in a transaction that bumps the epoch, and
//! every batch reads the epoch before it uses the cache and checks it again
//! in its write transaction. So a cached id is either still valid or the
//! write looks its names up again.
//!
//! Names are keyed by a 128-bit SipHash under a key drawn at start, so
//! that the map stays small (24 bytes an entry) and no name can be made to
//! collide with another on purpose. Two generations of at most
//! [`GENERATION_ENTRIES`] entries each bound the memory (~50 MB at most):
//! when the newer one is full, the older one is dropped.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Mutex;

use siphasher::sip128::{Hasher128, SipHasher13};

use super::names::{Keys, NameKind};

/// Entries in one generation: as many as fit in 2^20 buckets.
pub(crate) const GENERATION_ENTRIES: usize = (1 << 20) / 8 * 7;

/// A name's key in the cache: a 128-bit keyed hash of it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key(u64, u64);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a keyed hash: half of it places the entry.
        state.write_u64(self.0);
    }
}

/// Passes a [`Key`]'s half through (hashing it again cost more than the
/// lookup itself).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Map = HashMap<Key, i64, BuildHasherDefault<KeyHasher>>;

/// Ids of interned names by `(kind, suite, name)`.
pub(crate) struct NameCache {
    sip_key: [u8; 16],
    generation_entries: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The name epoch every entry is valid for.
    epoch: i64,
    newer: Map,
    older: Map,
}

impl State {
    /// Forgets everything if the database's epoch moved past the cache's;
    /// returns whether entries of `epoch` may be used or added.
    fn at(&mut self, epoch: i64) -> bool {
        if epoch > self.epoch {
            self.newer = Map::default();
            self.older = Map::default();
            self.epoch = epoch;
        }
        epoch == self.epoch
    }
}

impl NameCache {
    /// An empty cache with a fresh SipHash key.
    pub(crate) fn new() -> NameCache {
        NameCache::with_generation_entries(GENERATION_ENTRIES)
    }

    fn with_generation_entries(generation_entries: usize) -> NameCache {
        let mut sip_key = [0u8; 16];
        getrandom::fill(&mut sip_key).expect("the operating system provides randomness");
        NameCache { sip_key, generation_entries, state: Mutex::new(State::default()) }
    }

    fn key(&self, kind: NameKind, (suite, name): (&str, &str)) -> Key {
        let mut hasher = SipHasher13::new_with_key(&self.sip_key);
        (kind == NameKind::Metric, suite, name).hash(&mut hasher);
        let (high, low) = hasher.finish128().as_u64();
        Key(high, low)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain map: a panic while it was held leaves it usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached ids of `keys` at name epoch `epoch` (`None` where not
    /// cached, or all of them if the cache holds an older epoch).
    pub(crate) fn get(&self, epoch: i64, kind: NameKind, keys: &Keys<'_>) -> Vec<Option<i64>> {
        let hashed: Vec<Key> = keys.iter().map(|k| self.key(kind, *k)).collect();
        let mut state = self.lock();
        if !state.at(epoch) {
            return vec![None; keys.len()];
        }
        hashed.iter().map(|k| state.newer.get(k).or_else(|| state.older.get(k)).copied()).collect()
    }

    /// Remembers the ids of `keys` (where known), valid at name epoch
    /// `epoch`. Ids of names interned in a transaction may only be added
    /// once it committed.
    pub(crate) fn put(&self, epoch: i64, kind: NameKind, keys: &Keys<'_>, ids: &[Option<i64>]) {
        let hashed: Vec<(Key, i64)> =
            keys.iter().zip(ids).filter_map(|(k, id)| id.map(|id| (self.key(kind, *k), id))).collect();
        let mut state = self.lock();
        if !state.at(epoch) {
            return;
        }
        for (key, id) in hashed {
            if state.newer.len() >= self.generation_entries {
                state.older = std::mem::take(&mut state.newer);
            }
            state.newer.insert(key, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_ids_per_kind_and_epoch() {
        let cache = NameCache::new();
        let keys = [("s", "a"), ("s", "b"), ("s/a", "")];
        assert_eq!(cache.get(0, NameKind::Test, &keys), vec![None, None, None]);
        cache.put(0, NameKind::Test, &keys, &[Some(1), None, Some(3)]);
        assert_eq!(cache.get(0, NameKind::Test, &keys), vec![Some(1), None, Some(3)]);
        assert_eq!(cache.get(0, NameKind::Metric, &keys), vec![None, None, None]);
        // A newer epoch (names were deleted) forgets everything...
        assert_eq!(cache.get(1, NameKind::Test, &keys), vec![None, None, None]);
        // ...and ids from an older one are neither given nor kept.
        cache.put(0, NameKind::Test, &keys, &[Some(1), Some(2), Some(3)]);
        assert_eq!(cache.get(0, NameKind::Test, &keys), vec![None, None, None]);
        assert_eq!(cache.get(1, NameKind::Test, &keys), vec![None, None, None]);
    }

    #[test]
    fn keeps_two_generations() {
        let cache = NameCache::with_generation_entries(2);
        let keys = [("s", "a"), ("s", "b"), ("s", "c"), ("s", "d"), ("s", "e")];
        let ids: Vec<Option<i64>> = (1..=5).map(Some).collect();
        cache.put(0, NameKind::Test, &keys, &ids);
        // a, b went to the generation dropped when e came in.
        assert_eq!(cache.get(0, NameKind::Test, &keys), vec![None, None, Some(3), Some(4), Some(5)]);
    }
}
