//! The hub's side of the Redis cluster: [`RedisLink`] implements
//! [`ClusterLink`] by queueing work for the background tasks and reading the presence
//! replica. Nothing here waits on Redis.

use std::collections::{HashMap, HashSet};
use std::sync::Arc as StrArc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::ClusterConfig;
use super::envelope::{FLAG_BINARY, FLAG_EXCEPT_LOCAL, FLAG_POSITION, Kind};
use super::events::ClusterPresence;
use super::presence::Replica;
use crate::cluster_link::{ClusterLink, Except, HistoryFuture};
use crate::error::StreamError;
use crate::history::HistoryConfig;
use crate::hub::StreamHub;
use crate::message::SocketMessage;
use crate::socket_id::node_of;
use crate::sync::{AtomicU64, Mutex, Ordering, lock};

/// One message for the publisher: the envelope is built (and its sequence number assigned)
/// in the publisher task, so the broadcast path only bumps reference counts.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) kind: Kind,
    /// Room, socket id, user id or node id, per kind.
    pub(crate) target: Box<str>,
    /// For direct and user messages: the node whose channel carries it.
    pub(crate) node: Option<Box<str>>,
    pub(crate) except: Option<Box<str>>,
    pub(crate) flags: u8,
    pub(crate) payload: Bytes,
    /// The probe nonce, for probes; [`GOODBYE`] marks the goodbye.
    pub(crate) probe: u64,
}

/// Where the replies to one member query go: (answering node, its members).
pub(crate) type ReplySender = mpsc::UnboundedSender<(String, Vec<String>)>;

/// The `probe` value that marks a goodbye announcement.
pub(crate) const GOODBYE: u64 = u64::MAX;

/// Running totals; each counter only grows (a statistic: every access is Relaxed).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) publish_failed: AtomicU64,
    pub(crate) backlog_full: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) bad_messages: AtomicU64,
    pub(crate) publisher_connects: AtomicU64,
    pub(crate) subscriber_connects: AtomicU64,
    pub(crate) probe_stalls: AtomicU64,
    pub(crate) nodes_expired: AtomicU64,
    pub(crate) history_unlogged: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        // ORDERING: a statistic; nothing is published with it.
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        // ORDERING: a statistic.
        counter.load(Ordering::Relaxed)
    }
}

/// What changed locally and has not been acted on yet.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    /// Rooms whose subscription may need to change.
    pub(crate) subscriptions: HashSet<String>,
    /// Rooms whose member count changed since the last presence delta.
    pub(crate) rooms: HashSet<String>,
    /// Users whose device count changed since the last presence delta.
    pub(crate) users: HashSet<String>,
    /// The connection count changed since the last presence delta.
    pub(crate) connections: bool,
}

/// State shared by the link and the background tasks.
pub(crate) struct Shared {
    pub(crate) node: StrArc<str>,
    pub(crate) config: ClusterConfig,
    pub(crate) counters: Counters,
    pub(crate) replica: Mutex<Replica>,
    /// Who is online cluster-wide, for the hub's presence events (`events.rs`).
    pub(crate) presence: StrArc<ClusterPresence>,
    pub(crate) dirty: Mutex<Dirty>,
    /// Wakes the subscriber: `dirty.subscriptions` has rooms.
    pub(crate) wake_subscriber: Notify,
    /// Wakes the presence task: a delta is due.
    pub(crate) wake_presence: Notify,
    /// Asks the presence task for a full state and a hello now (this node (re)connected).
    pub(crate) resync: Notify,
    /// Asks the presence task for a full state now (another node said hello or is new).
    pub(crate) announce: Notify,
    /// Asks the subscriber to drop its connection and build a new one.
    pub(crate) rebuild_subscriber: Notify,
    /// Woken (all waiters) each time the subscriber has applied subscription changes.
    pub(crate) subs_done: Notify,
    /// Subscription changes requested so far (bumped with each `dirty.subscriptions` insert).
    pub(crate) subs_requested: AtomicU64,
    /// The `subs_requested` value the subscriber has fully applied (only grows).
    pub(crate) subs_applied: AtomicU64,
    /// Rooms the subscriber is subscribed to now.
    pub(crate) subscribed_rooms: AtomicU64,
    /// 1 while the publisher has a working connection, else 0.
    pub(crate) publisher_up: AtomicU64,
    /// 1 while the subscriber has a working connection with its base channels, else 0.
    pub(crate) subscriber_up: AtomicU64,
    /// The last probe nonce the publisher got into Redis.
    pub(crate) probe_published: AtomicU64,
    /// The last probe nonce of ours the subscriber saw come back.
    pub(crate) probe_seen: AtomicU64,
    /// Member queries waiting for replies: request id → where replies go.
    pub(crate) queries: Mutex<HashMap<u64, ReplySender>>,
    /// The last member-query id handed out (only uniqueness matters).
    pub(crate) next_query: AtomicU64,
    /// The last multi-room broadcast id handed out (only uniqueness per node matters; starts
    /// at the node's start time in nanoseconds, see `envelope.rs`).
    pub(crate) next_rooms_broadcast: AtomicU64,
    /// 1 once the goodbye reached Redis.
    pub(crate) goodbye_sent: AtomicU64,
    /// 1 once the node is shut down: hooks do nothing, queries see no other node.
    pub(crate) detached: AtomicU64,
    /// The hub's history settings (which rooms' logs live in Redis, their bounds).
    pub(crate) history: HistoryConfig,
    /// Rooms held subscribed for a recovery in progress (room → holders).
    pub(crate) held: Mutex<HashMap<String, usize>>,
    /// The publisher's current connection, for recovery reads (`None` while down).
    pub(crate) reader: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl Shared {
    pub(crate) fn new(node: StrArc<str>, config: ClusterConfig, history: HistoryConfig) -> Self {
        Self {
            node,
            config,
            counters: Counters::default(),
            replica: Mutex::new(Replica::default()),
            presence: StrArc::default(),
            dirty: Mutex::new(Dirty::default()),
            wake_subscriber: Notify::new(),
            wake_presence: Notify::new(),
            resync: Notify::new(),
            announce: Notify::new(),
            rebuild_subscriber: Notify::new(),
            subs_done: Notify::new(),
            subs_requested: AtomicU64::new(0),
            subs_applied: AtomicU64::new(0),
            subscribed_rooms: AtomicU64::new(0),
            publisher_up: AtomicU64::new(0),
            subscriber_up: AtomicU64::new(0),
            probe_published: AtomicU64::new(0),
            probe_seen: AtomicU64::new(0),
            queries: Mutex::new(HashMap::new()),
            next_query: AtomicU64::new(0),
            next_rooms_broadcast: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
            ),
            goodbye_sent: AtomicU64::new(0),
            detached: AtomicU64::new(0),
            history,
            held: Mutex::new(HashMap::new()),
            reader: Mutex::new(None),
        }
    }

    /// The keys of `room`'s history: its epoch, its last offset and its stream (the room in a
    /// hash tag, so the three live in one slot of a Redis Cluster).
    pub(crate) fn history_keys(&self, room: &str) -> [String; 3] {
        let p = &self.config.prefix;
        [
            format!("{p}:history:{{{room}}}:epoch"),
            format!("{p}:history:{{{room}}}:offset"),
            format!("{p}:history:{{{room}}}:stream"),
        ]
    }

    /// Whether a recovery holds `room` subscribed.
    pub(crate) fn is_held(&self, room: &str) -> bool {
        lock(&self.held).contains_key(room)
    }

    /// Marks `room`'s subscription for the subscriber to reconcile.
    pub(crate) fn touch_subscription(&self, room: &str) {
        {
            let mut dirty = lock(&self.dirty);
            if !dirty.subscriptions.contains(room) {
                dirty.subscriptions.insert(room.to_string());
            }
            // ORDERING: inside the dirty lock, which the subscriber takes before reading it.
            self.subs_requested.fetch_add(1, Ordering::Relaxed);
        }
        self.wake_subscriber.notify_one();
    }

    pub(crate) fn flag(cell: &AtomicU64) -> bool {
        // ORDERING: a status flag; the state it describes is read through its own locks.
        cell.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn set_flag(cell: &AtomicU64, on: bool) {
        // ORDERING: see `flag`.
        cell.store(u64::from(on), Ordering::Relaxed);
    }

    pub(crate) fn is_detached(&self) -> bool {
        Self::flag(&self.detached)
    }

    pub(crate) fn room_channel(&self, room: &str) -> String {
        format!("{}:room:{room}", self.config.prefix)
    }

    pub(crate) fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{node}", self.config.prefix)
    }

    pub(crate) fn presence_channel(&self) -> String {
        format!("{}:presence", self.config.prefix)
    }

    pub(crate) fn all_channel(&self) -> String {
        format!("{}:all", self.config.prefix)
    }

    /// Live remote nodes (expired ones removed first).
    pub(crate) fn replica(&self) -> crate::sync::MutexGuard<'_, Replica> {
        let mut r = lock(&self.replica);
        let gone = r.expire(Instant::now());
        if gone > 0 {
            Counters::bump(&self.counters.nodes_expired, gone as u64);
        }
        r
    }

    /// Expires silent nodes and hands the users whose remote devices changed to the
    /// cluster-wide presence view (which publishes `Online` / `Offline` to `hub`'s
    /// subscribers). Users touched by an expiry inside [`replica`](Self::replica) calls
    /// elsewhere are handed over here too, at the next call.
    pub(crate) fn settle(&self, hub: &StreamHub) {
        let mut r = self.replica();
        self.settle_locked(&mut r, hub);
    }

    /// [`settle`](Self::settle) with the replica's lock already held (kept held while the
    /// view is updated, so the view sees the replica's changes in order).
    pub(crate) fn settle_locked(&self, r: &mut Replica, hub: &StreamHub) {
        let events = hub.presence_events();
        for (user, online) in r.take_user_changes() {
            self.presence.remote(events, user, online);
        }
        for (member, present) in r.take_member_changes() {
            self.presence.remote_member(events, member, present);
        }
    }
}

/// The [`ClusterLink`] the hub holds.
pub(crate) struct RedisLink {
    pub(crate) shared: StrArc<Shared>,
    pub(crate) out: mpsc::Sender<Outbound>,
}

impl RedisLink {
    fn enqueue(&self, item: Outbound) -> bool {
        match self.out.try_send(item) {
            Ok(()) => true,
            Err(_) => {
                Counters::bump(&self.shared.counters.backlog_full, 1);
                false
            }
        }
    }

    fn outbound(kind: Kind, target: &str, msg: &SocketMessage) -> Outbound {
        let (flags, payload) = match msg {
            SocketMessage::Text(t) => (0, t.as_bytes().clone()),
            SocketMessage::Binary(b) => (FLAG_BINARY, b.clone()),
        };
        Outbound {
            kind,
            target: target.into(),
            node: None,
            except: None,
            flags,
            payload,
            probe: 0,
        }
    }
}

impl ClusterLink for RedisLink {
    fn node_id(&self) -> &str {
        &self.shared.node
    }

    fn room_broadcast(&self, room: &str, msg: &SocketMessage, except: Option<Except<'_>>) {
        if self.shared.is_detached() {
            return;
        }
        let mut item = Self::outbound(Kind::Room, room, msg);
        if let Some(except) = except {
            item.except = Some(except.socket_id.into());
            if except.local {
                item.flags |= FLAG_EXCEPT_LOCAL;
            }
        }
        self.enqueue(item);
    }

    fn rooms_broadcast(&self, rooms: &[&str], msg: &SocketMessage, except: Option<Except<'_>>) {
        if self.shared.is_detached() {
            return;
        }
        // ORDERING: only uniqueness matters.
        let id = self
            .shared
            .next_rooms_broadcast
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let template = Self::outbound(Kind::Rooms, "", msg);
        let payload = super::envelope::rooms_payload(id, rooms, &template.payload);
        for room in rooms {
            let mut item = Self::outbound(Kind::Rooms, room, msg);
            item.payload = payload.clone();
            if let Some(except) = except {
                item.except = Some(except.socket_id.into());
                if except.local {
                    item.flags |= FLAG_EXCEPT_LOCAL;
                }
            }
            self.enqueue(item);
        }
    }

    fn room_changed(&self, room: &str) {
        if self.shared.is_detached() {
            return;
        }
        {
            let mut dirty = lock(&self.shared.dirty);
            if !dirty.subscriptions.contains(room) {
                dirty.subscriptions.insert(room.to_string());
            }
            if !dirty.rooms.contains(room) {
                dirty.rooms.insert(room.to_string());
            }
            // ORDERING: inside the dirty lock, which the subscriber takes before reading it.
            self.shared.subs_requested.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.wake_subscriber.notify_one();
        self.shared.wake_presence.notify_one();
    }

    fn user_changed(&self, user: &str) {
        if self.shared.is_detached() {
            return;
        }
        {
            let mut dirty = lock(&self.shared.dirty);
            if !dirty.users.contains(user) {
                dirty.users.insert(user.to_string());
            }
        }
        self.shared.wake_presence.notify_one();
    }

    fn connections_changed(&self) {
        if self.shared.is_detached() {
            return;
        }
        lock(&self.shared.dirty).connections = true;
        self.shared.wake_presence.notify_one();
    }

    fn send_to_remote(&self, socket_id: &str, msg: &SocketMessage) -> Result<(), StreamError> {
        let not_found = || StreamError::SocketNotFound(socket_id.to_string());
        if self.shared.is_detached() {
            return Err(not_found());
        }
        let node = node_of(socket_id).ok_or_else(not_found)?;
        if node == &*self.shared.node || !self.shared.replica().has_node(node) {
            return Err(not_found());
        }
        let mut item = Self::outbound(Kind::Direct, socket_id, msg);
        item.node = Some(node.into());
        if self.enqueue(item) {
            Ok(())
        } else {
            Err(StreamError::SendFailed(socket_id.to_string()))
        }
    }

    fn send_to_user_remote(&self, user: &str, msg: &SocketMessage) -> usize {
        if self.shared.is_detached() {
            return 0;
        }
        let nodes = self.shared.replica().nodes_of_user(user);
        let mut sent = 0;
        for node in nodes {
            let mut item = Self::outbound(Kind::User, user, msg);
            item.node = Some(node.into_boxed_str());
            sent += usize::from(self.enqueue(item));
        }
        sent
    }

    fn broadcast_all_remote(&self, msg: &SocketMessage) {
        if self.shared.is_detached() {
            return;
        }
        self.enqueue(Self::outbound(Kind::All, "", msg));
    }

    fn remote_user_online(&self, user: &str) -> bool {
        !self.shared.is_detached() && self.shared.replica().user_online(user)
    }

    fn remote_users(&self) -> Vec<String> {
        if self.shared.is_detached() {
            return Vec::new();
        }
        self.shared.replica().users()
    }

    fn remote_connections(&self) -> usize {
        if self.shared.is_detached() {
            return 0;
        }
        self.shared.replica().connections()
    }

    fn remote_rooms(&self) -> Vec<(String, usize)> {
        if self.shared.is_detached() {
            return Vec::new();
        }
        self.shared.replica().rooms()
    }

    fn remote_room_size(&self, room: &str) -> usize {
        if self.shared.is_detached() {
            return 0;
        }
        self.shared.replica().room_size(room)
    }

    fn keeps_history(&self) -> bool {
        self.shared.history.is_enabled()
    }

    fn history_publish(
        &self,
        room: &str,
        msg: &SocketMessage,
        except: Option<Except<'_>>,
    ) -> Result<(), StreamError> {
        if self.shared.is_detached() {
            return Err(StreamError::SendFailed(room.to_string()));
        }
        // Down (either connection): the message would not come back to this node; fail fast
        // so the hub delivers it locally.
        if !(Shared::flag(&self.shared.publisher_up) && Shared::flag(&self.shared.subscriber_up)) {
            Counters::bump(&self.shared.counters.history_unlogged, 1);
            return Err(StreamError::SendFailed(room.to_string()));
        }
        let mut item = Self::outbound(Kind::Room, room, msg);
        item.flags |= FLAG_POSITION;
        if let Some(except) = except {
            item.except = Some(except.socket_id.into());
            if except.local {
                item.flags |= FLAG_EXCEPT_LOCAL;
            }
        }
        if self.enqueue(item) {
            Ok(())
        } else {
            Counters::bump(&self.shared.counters.history_unlogged, 1);
            Err(StreamError::SendFailed(room.to_string()))
        }
    }

    fn history_hold(&self, room: &str, hold: bool) {
        {
            let mut held = lock(&self.shared.held);
            if hold {
                *held.entry(room.to_string()).or_insert(0) += 1;
            } else if let Some(n) = held.get_mut(room) {
                *n -= 1;
                if *n == 0 {
                    held.remove(room);
                }
            }
        }
        self.shared.touch_subscription(room);
    }

    fn history_range<'a>(&'a self, room: &'a str, after: u64, limit: usize) -> HistoryFuture<'a> {
        Box::pin(super::history::range(&self.shared, room, after, limit))
    }
}
