//! Presence events: per-user transitions (online/offline, first device in a room / last device
//! out), delivered through a bounded subscription and coalesced into diffs.
//!
//! # Where events come from
//!
//! The hub detects each transition inside the critical section that makes it — a users-shard
//! writer for online/offline, the room's writer for joins and leaves — and hands it to one
//! internal function, [`PresenceEvents::local`]. Because that happens under the lock that
//! serializes the transitions of one (room, user), the events of one user in one room are
//! emitted in the order they happened: a subscriber never sees "left" overtake "joined".
//!
//! # Delivery
//!
//! [`StreamHub::subscribe_presence`](crate::StreamHub::subscribe_presence) returns a
//! [`PresenceSubscription`]: a bounded buffer (tokio's broadcast ring, sized by
//! [`HubConfig::presence_buffer`](crate::HubConfig::presence_buffer)) that never blocks the
//! hub. A subscriber that falls more than the buffer behind loses the oldest events and is
//! told how many ([`PresenceRecvError::Lagged`], [`PresenceDiff::missed`]); it should then
//! rebuild its view from the hub's queries. Nothing is buffered while nobody subscribes.
//!
//! # Coalescing
//!
//! The core has no timers: a [`PresenceDiff`] accumulates events and cancels a transition
//! undone within the same diff (joined then left → nothing), the way Phoenix's
//! `presence_diff` batches. Who decides the window is the consumer:
//! [`PresenceSubscription::drain_into`] empties the buffer into a diff without waiting (drive
//! it from your own schedule), and with the `server` feature
//! [`PresenceSubscription::recv_diff`] waits for the first event, then collects for a window
//! with tokio's timer.
//!
//! # Clustered hubs
//!
//! A cluster layer wants events on the *cluster-wide* transition (a user's first device on any
//! node). It installs a relay with [`PresenceEvents::set_relay`]: local transitions then go to
//! the relay instead of the subscribers; the relay folds them into its cluster view and calls
//! [`PresenceEvents::publish`] for each cluster-wide transition. Without a relay, local
//! transitions are published as they are (the single-node case).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc as StrArc;

use tokio::sync::broadcast;

use crate::sync::{Mutex, Ordering, StatUsize, lock};

/// Who is present: a user (all its devices count as one), or an anonymous socket (which is its
/// own one-device presence).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PresenceKey {
    /// An authenticated user, by user id.
    User(StrArc<str>),
    /// An anonymous socket, by socket id.
    Socket(StrArc<str>),
}

impl PresenceKey {
    /// The user id or socket id.
    pub fn as_str(&self) -> &str {
        match self {
            PresenceKey::User(s) | PresenceKey::Socket(s) => s,
        }
    }

    /// Whether this is an authenticated user.
    pub fn is_user(&self) -> bool {
        matches!(self, PresenceKey::User(_))
    }
}

impl fmt::Display for PresenceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One presence transition.
///
/// # Examples
///
/// ```
/// use nucleus_stream::{channel, PresenceEvent, PresenceKey, QueueConfig, StreamHub, WebSocket};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let hub = StreamHub::new();
/// let mut events = hub.subscribe_presence();
/// let (tx, _rx) = channel(QueueConfig::default());
/// hub.register(WebSocket::authenticated("phone", "alice", tx)).await?;
/// hub.join_room("phone", "general").await?;
/// assert_eq!(events.recv().await, Ok(PresenceEvent::Online { user: "alice".into() }));
/// assert_eq!(
///     events.recv().await,
///     Ok(PresenceEvent::Joined { room: "general".into(), member: PresenceKey::User("alice".into()) })
/// );
/// # Ok::<(), nucleus_stream::StreamError>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceEvent {
    /// The user's first socket registered.
    Online {
        /// The user id.
        user: StrArc<str>,
    },
    /// The user's last socket unregistered.
    Offline {
        /// The user id.
        user: StrArc<str>,
    },
    /// The member's first socket joined the room.
    Joined {
        /// The room.
        room: StrArc<str>,
        /// The user (or anonymous socket).
        member: PresenceKey,
    },
    /// The member's last socket left the room (or unregistered).
    Left {
        /// The room.
        room: StrArc<str>,
        /// The user (or anonymous socket).
        member: PresenceKey,
    },
}

/// Why [`PresenceSubscription::recv`] returned no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceRecvError {
    /// The subscriber fell behind and this many of the oldest events were lost; the next
    /// `recv` returns the oldest one still buffered. Rebuild your view from the hub's queries.
    #[error("presence subscriber lagged: {0} events lost")]
    Lagged(u64),
    /// The hub is gone: no event will come.
    #[error("the hub is gone")]
    Closed,
}

/// A bounded stream of [`PresenceEvent`]s from one hub.
///
/// Made by [`StreamHub::subscribe_presence`](crate::StreamHub::subscribe_presence). Events are
/// per user: online on a user's first socket, offline on its last, joined when its first
/// socket enters a room, left when its last leaves (an anonymous socket is its own presence,
/// [`PresenceKey::Socket`]). The events of one user in one room arrive in the order they
/// happened. The buffer is bounded
/// ([`HubConfig::presence_buffer`](crate::HubConfig::presence_buffer)) and never blocks the
/// hub: a subscriber that falls behind loses the oldest events and is told how many
/// ([`PresenceRecvError::Lagged`], [`PresenceDiff::missed`]); it should then rebuild its view
/// from [`StreamHub::room_presence`](crate::StreamHub::room_presence) and
/// [`online_users`](crate::StreamHub::online_users).
///
/// Coalescing is the consumer's: the core has no timers. [`drain_into`](Self::drain_into)
/// folds what is buffered into a [`PresenceDiff`] without waiting (call it on your own
/// schedule); [`recv_diff`](Self::recv_diff) (feature `server`) waits for an event and then
/// collects for a window. Dropping the subscription unsubscribes.
pub struct PresenceSubscription {
    rx: broadcast::Receiver<PresenceEvent>,
    /// The source's subscriber count (not the source itself: the channel must close when
    /// the hub is dropped).
    subscribers: StrArc<StatUsize>,
}

impl PresenceSubscription {
    /// The next event, waiting for one.
    ///
    /// Cancel safe: dropping the future before it completes loses no event.
    ///
    /// # Errors
    ///
    /// [`PresenceRecvError::Lagged`] after events were lost to the bound;
    /// [`PresenceRecvError::Closed`] once the hub is dropped and everything was received.
    pub async fn recv(&mut self) -> Result<PresenceEvent, PresenceRecvError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => PresenceRecvError::Lagged(n),
            broadcast::error::RecvError::Closed => PresenceRecvError::Closed,
        })
    }

    /// The next buffered event, if any, without waiting.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Option<PresenceEvent>, PresenceRecvError> {
        match self.rx.try_recv() {
            Ok(e) => Ok(Some(e)),
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Err(PresenceRecvError::Lagged(n)),
            Err(broadcast::error::TryRecvError::Closed) => Err(PresenceRecvError::Closed),
        }
    }

    /// Moves every buffered event into `diff` without waiting (lost events are added to
    /// [`PresenceDiff::missed`]). Returns how many events were taken, or `None` if the hub is
    /// gone and nothing was left.
    pub fn drain_into(&mut self, diff: &mut PresenceDiff) -> Option<usize> {
        let mut n = 0;
        loop {
            match self.try_recv() {
                Ok(Some(event)) => {
                    diff.push(&event);
                    n += 1;
                }
                Ok(None) => return Some(n),
                Err(PresenceRecvError::Lagged(lost)) => diff.missed += lost,
                Err(PresenceRecvError::Closed) => return (n > 0).then_some(n),
            }
        }
    }

    /// Waits for the next event, then collects everything that arrives within `window` of it
    /// into one [`PresenceDiff`]. Returns `None` once the hub is gone. The diff may be empty
    /// when everything in the window cancelled out (check [`PresenceDiff::is_empty`]).
    ///
    /// Cancel safe up to the events already taken: dropping the future discards the diff
    /// being built.
    #[cfg(all(feature = "server", not(nucleus_loom)))]
    pub async fn recv_diff(&mut self, window: std::time::Duration) -> Option<PresenceDiff> {
        let mut diff = PresenceDiff::new();
        match self.recv().await {
            Ok(event) => diff.push(&event),
            Err(PresenceRecvError::Lagged(lost)) => diff.missed += lost,
            Err(PresenceRecvError::Closed) => return None,
        }
        let deadline = tokio::time::Instant::now() + window;
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Err(_elapsed) => break,
                Ok(Ok(event)) => diff.push(&event),
                Ok(Err(PresenceRecvError::Lagged(lost))) => diff.missed += lost,
                Ok(Err(PresenceRecvError::Closed)) => break,
            }
        }
        Some(diff)
    }
}

impl Drop for PresenceSubscription {
    fn drop(&mut self) {
        // ORDERING: the gate is advisory (see `PresenceEvents::active`).
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for PresenceSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresenceSubscription")
            .field("buffered", &self.rx.len())
            .finish()
    }
}

/// The net change of one room within a [`PresenceDiff`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomDiff {
    /// member → (present before the diff, present after).
    changes: BTreeMap<PresenceKey, (bool, bool)>,
}

impl RoomDiff {
    /// Members that are in the room now and were not before, in order.
    pub fn joins(&self) -> impl Iterator<Item = &PresenceKey> {
        self.changes
            .iter()
            .filter(|(_, (was, now))| *now && !*was)
            .map(|(k, _)| k)
    }

    /// Members that were in the room before and are not now, in order.
    pub fn leaves(&self) -> impl Iterator<Item = &PresenceKey> {
        self.changes
            .iter()
            .filter(|(_, (was, now))| *was && !*now)
            .map(|(k, _)| k)
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Presence events folded into net changes: who came online, who went offline, and per room
/// who joined and who left. A transition undone within the diff cancels out.
///
/// # Examples
///
/// ```
/// use nucleus_stream::{PresenceDiff, PresenceEvent, PresenceKey};
/// let alice = PresenceKey::User("alice".into());
/// let bob = PresenceKey::User("bob".into());
/// let mut diff = PresenceDiff::new();
/// diff.push(&PresenceEvent::Joined { room: "r".into(), member: alice.clone() });
/// diff.push(&PresenceEvent::Joined { room: "r".into(), member: bob.clone() });
/// diff.push(&PresenceEvent::Left { room: "r".into(), member: bob.clone() });
/// let (room, changes) = diff.rooms().next().unwrap();
/// assert_eq!(room, "r");
/// assert_eq!(changes.joins().collect::<Vec<_>>(), [&alice]);
/// assert_eq!(changes.leaves().count(), 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PresenceDiff {
    /// user → (online before, online after).
    users: BTreeMap<StrArc<str>, (bool, bool)>,
    rooms: BTreeMap<StrArc<str>, RoomDiff>,
    missed: u64,
}

impl PresenceDiff {
    /// An empty diff.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one event in.
    pub fn push(&mut self, event: &PresenceEvent) {
        match event {
            PresenceEvent::Online { user } => fold(&mut self.users, user, true),
            PresenceEvent::Offline { user } => fold(&mut self.users, user, false),
            PresenceEvent::Joined { room, member } | PresenceEvent::Left { room, member } => {
                let present = matches!(event, PresenceEvent::Joined { .. });
                let diff = self.rooms.entry(StrArc::clone(room)).or_default();
                fold(&mut diff.changes, member, present);
                if diff.changes.is_empty() {
                    self.rooms.remove(room);
                }
            }
        }
    }

    /// Users who came online, in order.
    pub fn online(&self) -> impl Iterator<Item = &str> {
        self.users
            .iter()
            .filter(|(_, (was, now))| *now && !*was)
            .map(|(u, _)| &**u)
    }

    /// Users who went offline, in order.
    pub fn offline(&self) -> impl Iterator<Item = &str> {
        self.users
            .iter()
            .filter(|(_, (was, now))| *was && !*now)
            .map(|(u, _)| &**u)
    }

    /// Rooms with a net change, in name order.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, &RoomDiff)> {
        self.rooms.iter().map(|(name, diff)| (&**name, diff))
    }

    /// The net change of one room, if any.
    pub fn room(&self, name: &str) -> Option<&RoomDiff> {
        self.rooms.get(name)
    }

    /// Events lost because the subscriber lagged: when not zero the diff is incomplete and the
    /// consumer should rebuild its view from the hub's queries.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Whether the diff holds no change and no loss.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.rooms.is_empty() && self.missed == 0
    }
}

/// Records that `key` is now `present`, cancelling with an earlier opposite transition.
fn fold<K: Ord + Clone>(map: &mut BTreeMap<K, (bool, bool)>, key: &K, present: bool) {
    match map.get_mut(key) {
        Some(state) => {
            state.1 = present;
            if state.0 == state.1 {
                map.remove(key);
            }
        }
        None => {
            map.insert(key.clone(), (!present, present));
        }
    }
}

/// A cluster layer's hook: receives each local transition (see the module docs), with the
/// event source to [`publish`](PresenceEvents::publish) the cluster-wide ones to (so the relay
/// need not own the hub).
pub(crate) type Relay = StrArc<dyn Fn(&PresenceEvents, PresenceEvent) + Send + Sync>;

/// The hub's event source: where every transition goes.
pub(crate) struct PresenceEvents {
    /// Live subscriptions. Advisory: emitters skip all work while it and `relayed` are zero,
    /// so an event racing the first subscribe may be missed (a subscription sees the events
    /// of transitions that begin after `subscribe` returned).
    subscribers: StrArc<StatUsize>,
    /// 1 once a relay is installed (never reset). Same discipline.
    relayed: StatUsize,
    state: Mutex<EventsState>,
    capacity: usize,
}

struct EventsState {
    /// Made on the first subscribe (the ring's slots are allocated up front).
    tx: Option<broadcast::Sender<PresenceEvent>>,
    relay: Option<Relay>,
}

impl PresenceEvents {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            subscribers: StrArc::new(StatUsize::new(0)),
            relayed: StatUsize::new(0),
            state: Mutex::new(EventsState {
                tx: None,
                relay: None,
            }),
            capacity: capacity.max(1),
        }
    }

    /// Whether anyone listens (the emitters' fast path).
    pub(crate) fn active(&self) -> bool {
        // ORDERING: advisory gates; see the field docs.
        self.subscribers.load(Ordering::Relaxed) > 0 || self.relayed.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn subscribe(&self) -> PresenceSubscription {
        let mut state = lock(&self.state);
        let rx = match &state.tx {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(self.capacity);
                state.tx = Some(tx);
                rx
            }
        };
        // ORDERING: advisory gate; the channel itself is published by the mutex.
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        PresenceSubscription {
            rx,
            subscribers: StrArc::clone(&self.subscribers),
        }
    }

    /// A transition this hub made. Called inside the critical section that made it; goes to
    /// the relay if one is installed, else to the subscribers.
    pub(crate) fn local(&self, event: impl FnOnce() -> PresenceEvent) {
        if !self.active() {
            return;
        }
        let event = event();
        let relay = lock(&self.state).relay.clone();
        match relay {
            // Called outside the events lock: a relay may call `publish` from inside.
            Some(relay) => relay(self, event),
            None => self.publish(event),
        }
    }

    /// Delivers an event to the subscribers (the relay's output path).
    pub(crate) fn publish(&self, event: PresenceEvent) {
        if let Some(tx) = &lock(&self.state).tx {
            // No receiver left is fine: nobody listens.
            let _ = tx.send(event);
        }
    }

    /// Routes local transitions to `relay` from now on (a cluster layer's hook).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // The cluster layer's entry point.
    pub(crate) fn set_relay(&self, relay: Relay) {
        lock(&self.state).relay = Some(relay);
        // ORDERING: advisory gate.
        self.relayed.store(1, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(nucleus_loom)))]
mod tests {
    use super::*;

    fn joined(room: &str, user: &str) -> PresenceEvent {
        PresenceEvent::Joined {
            room: room.into(),
            member: PresenceKey::User(user.into()),
        }
    }

    #[test]
    fn a_relay_gets_local_transitions_and_only_what_it_publishes_reaches_subscribers() {
        let events = PresenceEvents::new(16);
        let mut sub = events.subscribe();
        let seen = StrArc::new(std::sync::Mutex::new(Vec::new()));
        let relay_seen = StrArc::clone(&seen);
        events.set_relay(StrArc::new(
            move |events: &PresenceEvents, event: PresenceEvent| {
                relay_seen.lock().unwrap().push(event.clone());
                // A cluster view: only room "shared" is a cluster-wide transition.
                if matches!(&event, PresenceEvent::Joined { room, .. } if &**room == "shared") {
                    events.publish(event);
                }
            },
        ));
        events.local(|| joined("local-only", "alice"));
        events.local(|| joined("shared", "alice"));
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(sub.try_recv(), Ok(Some(joined("shared", "alice"))));
        assert_eq!(sub.try_recv(), Ok(None));
    }

    #[test]
    fn leave_then_join_cancels_and_lag_is_counted() {
        let events = PresenceEvents::new(2);
        let mut sub = events.subscribe();
        for user in ["a", "b", "c"] {
            events.local(|| joined("r", user));
        }
        let mut diff = PresenceDiff::new();
        assert_eq!(sub.drain_into(&mut diff), Some(2));
        assert_eq!(diff.missed(), 1);
        let mut diff = PresenceDiff::new();
        diff.push(&PresenceEvent::Left {
            room: "r".into(),
            member: PresenceKey::User("a".into()),
        });
        diff.push(&joined("r", "a"));
        diff.push(&PresenceEvent::Online { user: "z".into() });
        diff.push(&PresenceEvent::Offline { user: "z".into() });
        assert!(diff.is_empty(), "{diff:?}");
    }

    #[test]
    fn nothing_is_built_while_nobody_listens() {
        let events = PresenceEvents::new(4);
        events.local(|| unreachable!("no subscriber: the event is never built"));
    }
}
