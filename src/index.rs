//! A string-keyed map whose reads take no lock: sharded copy-on-write hash maps.
//!
//! Each shard is an arc-swap cell holding an immutable `HashMap`. A lookup hashes the key to a
//! shard, loads that shard's current map (wait-free) and probes it. A writer takes the shard's
//! mutex, copies the shard's map, edits the copy and publishes it, so a writer costs
//! `O(entries / shards)` and readers never wait for it. This is how the hub finds sockets,
//! rooms and users on its broadcast and send paths without a lock. (Writers — register,
//! unregister, creating or removing a room, a user's first and last device — happen at
//! connection rate, not message rate.)

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc as StrArc;

use crate::sync::{Arc, AtomicCell, HashState, Mutex, lock};

pub(crate) type Map<V> = HashMap<StrArc<str>, V, HashState>;

pub(crate) struct ShardedIndex<V> {
    shards: Box<[Shard<V>]>,
    hasher: HashState,
}

struct Shard<V> {
    /// Serializes writers of this shard; readers never take it.
    writer: Mutex<()>,
    map: AtomicCell<Map<V>>,
}

impl<V: Clone> ShardedIndex<V> {
    /// `shards` is rounded up to a power of two (at least 1).
    pub(crate) fn new(shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        Self {
            shards: (0..n)
                .map(|_| Shard {
                    writer: Mutex::new(()),
                    map: AtomicCell::new(Arc::new(HashMap::default())),
                })
                .collect(),
            hasher: HashState::default(),
        }
    }

    fn shard(&self, key: &str) -> &Shard<V> {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h & (self.shards.len() - 1)]
    }

    /// Lock-free lookup: runs `f` on the current value, if any.
    pub(crate) fn with<R>(&self, key: &str, f: impl FnOnce(&V) -> R) -> Option<R> {
        let map = self.shard(key).map.load();
        map.get(key).map(f)
    }

    /// Lock-free lookup returning a clone of the value.
    pub(crate) fn get(&self, key: &str) -> Option<V> {
        self.with(key, V::clone)
    }

    /// Runs `edit` on the shard's map under the shard's writer lock. `edit` sees the current
    /// map and returns `(result, Some(new_map))` to publish a change or `(result, None)` to
    /// leave it as it is. Lock order: `edit` may take a room's writer lock (checking whether a
    /// room is dead), never a socket's or another shard's.
    pub(crate) fn update<R>(
        &self,
        key: &str,
        edit: impl FnOnce(&Map<V>) -> (R, Option<Map<V>>),
    ) -> R {
        self.update_then(key, edit, |_| ())
    }

    /// As [`update`](Self::update), then runs `then` on the result after the new map is
    /// published and before the writer lock is released: what `then` announces is already
    /// visible to readers, and announcements about one key keep their order.
    pub(crate) fn update_then<R>(
        &self,
        key: &str,
        edit: impl FnOnce(&Map<V>) -> (R, Option<Map<V>>),
        then: impl FnOnce(&R),
    ) -> R {
        let shard = self.shard(key);
        let _writer = lock(&shard.writer);
        let current = shard.map.load();
        let (result, next) = edit(&current);
        drop(current);
        if let Some(next) = next {
            shard.map.store(Arc::new(next));
        }
        then(&result);
        result
    }

    /// Visits every entry of every shard, each shard as of one lock-free load. Entries added
    /// or removed meanwhile may or may not be seen.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&StrArc<str>, &V)) {
        for shard in self.shards.iter() {
            let map = shard.map.load();
            for (k, v) in map.iter() {
                f(k, v);
            }
        }
    }
}
