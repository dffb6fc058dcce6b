//! Presence: which users are online, through which sockets (devices).
//!
//! A user is online while at least one of its sockets is registered. The device lists live in
//! a [`ShardedIndex`](crate::index::ShardedIndex): `send_to_user` and `is_user_online` read
//! them without a lock; a device connecting or disconnecting rewrites its user's shard under
//! that shard's writer lock, and the online counter and transition counters change inside the
//! same critical section, so they are exact and never underflow.

use std::sync::Arc as StrArc;

use smallvec::SmallVec;

use crate::entry::SocketEntry;
use crate::index::ShardedIndex;
use crate::sync::{Arc, AtomicU64, AtomicUsize, Ordering};

/// The sockets of one user.
pub(crate) struct Devices(pub(crate) SmallVec<[Arc<SocketEntry>; 2]>);

pub(crate) struct Presence {
    users: ShardedIndex<Arc<Devices>>,
    /// Users with at least one device. Changed only inside a users-shard critical section
    /// that also changes that user's device list, so it equals the number of non-empty lists
    /// whenever no writer is mid-section, and never underflows.
    online: AtomicUsize,
    /// Offline → online transitions so far (a user's first device). Same discipline.
    went_online: AtomicU64,
    /// Online → offline transitions so far (a user's last device). Same discipline.
    went_offline: AtomicU64,
}

impl Presence {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            users: ShardedIndex::new(shards),
            online: AtomicUsize::new(0),
            went_online: AtomicU64::new(0),
            went_offline: AtomicU64::new(0),
        }
    }

    /// Adds a device; returns whether the user just came online.
    pub(crate) fn add(&self, user: &StrArc<str>, entry: &Arc<SocketEntry>) -> bool {
        self.users.update(user, |map| {
            let mut next = map.clone();
            let mut devices = SmallVec::new();
            let first = match map.get(user) {
                Some(existing) => {
                    devices.extend(existing.0.iter().cloned());
                    false
                }
                None => true,
            };
            devices.push(Arc::clone(entry));
            next.insert(StrArc::clone(user), Arc::new(Devices(devices)));
            if first {
                // ORDERING: exactness comes from the shard lock, not from the atomic.
                self.online.fetch_add(1, Ordering::Relaxed);
                // ORDERING: statistics counter, no data depends on it.
                self.went_online.fetch_add(1, Ordering::Relaxed);
            }
            (first, Some(next))
        })
    }

    /// Removes a device; returns whether the user just went offline.
    pub(crate) fn remove(&self, user: &str, entry: &Arc<SocketEntry>) -> bool {
        self.users.update(user, |map| {
            let Some(existing) = map.get(user) else {
                return (false, None);
            };
            if !existing.0.iter().any(|d| Arc::ptr_eq(d, entry)) {
                return (false, None);
            }
            let mut next = map.clone();
            let remaining: SmallVec<[Arc<SocketEntry>; 2]> = existing
                .0
                .iter()
                .filter(|d| !Arc::ptr_eq(d, entry))
                .cloned()
                .collect();
            let last = remaining.is_empty();
            if last {
                next.remove(user);
                // ORDERING: exactness comes from the shard lock; the entry existed, so the
                // counter is at least 1 here.
                self.online.fetch_sub(1, Ordering::Relaxed);
                // ORDERING: statistics counter, no data depends on it.
                self.went_offline.fetch_add(1, Ordering::Relaxed);
            } else {
                next.insert(StrArc::from(user), Arc::new(Devices(remaining)));
            }
            (last, Some(next))
        })
    }

    /// Runs `f` on the user's current devices (lock-free), if the user is online.
    pub(crate) fn with_devices<R>(&self, user: &str, f: impl FnOnce(&Devices) -> R) -> Option<R> {
        self.users.with(user, |d| f(d))
    }

    pub(crate) fn is_online(&self, user: &str) -> bool {
        self.users.with(user, |_| ()).is_some()
    }

    pub(crate) fn online_users(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.users.for_each(|user, _| out.push(user.to_string()));
        out
    }

    /// Calls `f` with each online user and its device count.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&str, usize)) {
        self.users
            .for_each(|user, devices| f(user, devices.0.len()));
    }

    pub(crate) fn online_count(&self) -> usize {
        // ORDERING: a statistic; exact once concurrent registrations have returned.
        self.online.load(Ordering::Relaxed)
    }

    pub(crate) fn transitions(&self) -> (u64, u64) {
        // ORDERING: statistics.
        (
            self.went_online.load(Ordering::Relaxed),
            self.went_offline.load(Ordering::Relaxed),
        )
    }
}
