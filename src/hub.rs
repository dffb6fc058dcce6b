//! The hub: sockets, rooms, users, and every way to reach them.

use std::ptr;
use std::sync::Arc as StrArc;

use smallvec::SmallVec;

use crate::cluster_link::{ClusterLink, Except};
use crate::disconnect::{Disconnect, DisconnectReason, Unregistered};
use crate::entry::SocketEntry;
use crate::error::StreamError;
use crate::history::{HistoryConfig, RoomLog};
use crate::index::ShardedIndex;
use crate::message::SocketMessage;
use crate::presence::Presence;
use crate::presence_events::{PresenceEvents, PresenceKey, PresenceSubscription};
use crate::queue::{CloseReason, PushError};
use crate::report::BroadcastReport;
use crate::room::{JoinOutcome, LeaveOutcome, Members, Room, RoomCell};
use crate::shared_message::SharedMessage;
use crate::socket::WebSocket;
use crate::socket_id::SocketIdGenerator;
use crate::sync::{Arc, AtomicUsize, OnceLock, Ordering, lock};
use crate::totals::{Counters, HubTotals, SocketStats};

/// Limits and sizing of a [`StreamHub`].
///
/// # Examples
///
/// ```
/// use nucleus_stream::{HubConfig, StreamHub};
/// let hub = StreamHub::with_config(
///     HubConfig::default().max_room_name_len(64).max_rooms_per_socket(16),
/// );
/// # drop(hub);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    max_room_name_len: usize,
    max_rooms_per_socket: usize,
    shards: usize,
    presence_buffer: usize,
    history: HistoryConfig,
}

impl Default for HubConfig {
    /// Room names up to 128 bytes, 128 rooms per socket, 256 index shards, 16,384 buffered
    /// presence events per subscriber.
    fn default() -> Self {
        Self {
            max_room_name_len: 128,
            max_rooms_per_socket: 128,
            shards: 256,
            presence_buffer: 16_384,
            history: HistoryConfig::default(),
        }
    }
}

impl HubConfig {
    /// Longest accepted room name, in UTF-8 bytes (at least 1).
    pub fn max_room_name_len(mut self, n: usize) -> Self {
        self.max_room_name_len = n.max(1);
        self
    }

    /// Most rooms one socket may be in at once (at least 1).
    pub fn max_rooms_per_socket(mut self, n: usize) -> Self {
        self.max_rooms_per_socket = n.max(1);
        self
    }

    /// Shards of the socket, room and user indexes (rounded up to a power of two). A
    /// register, or the creation or removal of a room, copies one shard's map, so more
    /// shards make those cheaper in a large hub at a small fixed memory cost (~200 bytes
    /// per shard per index).
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n.max(1);
        self
    }

    /// Presence events buffered for a [`PresenceSubscription`] that has not read them yet (at
    /// least 1); past it the oldest are lost and the subscriber is told how many. The buffer
    /// (about 40 bytes a slot) is allocated on the first subscribe, never before.
    pub fn presence_buffer(mut self, events: usize) -> Self {
        self.presence_buffer = events.max(1);
        self
    }

    /// Which rooms keep a history for recovery, and how much (off by default; see
    /// [`HistoryConfig`] and [`StreamHub::join_room_since`]).
    pub fn history(mut self, history: HistoryConfig) -> Self {
        self.history = history;
        self
    }

    /// The history settings ([`history`](Self::history)).
    pub fn history_config(&self) -> &HistoryConfig {
        &self.history
    }

    // Readers: named for what they return, without `get_` (setters own the setting names;
    // `docs/design.md` "Configuration").

    /// The longest accepted room name in bytes ([`max_room_name_len`](Self::max_room_name_len)).
    pub fn room_name_limit(&self) -> usize {
        self.max_room_name_len
    }

    /// The most rooms per socket ([`max_rooms_per_socket`](Self::max_rooms_per_socket)).
    pub fn rooms_per_socket_limit(&self) -> usize {
        self.max_rooms_per_socket
    }

    /// The number of index shards as configured ([`shards`](Self::shards); the hub rounds it
    /// up to a power of two).
    pub fn shard_count(&self) -> usize {
        self.shards
    }
}

/// Counters describing a hub at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Registered sockets.
    pub connections: usize,
    /// Users with at least one registered socket.
    pub online_users: usize,
    /// Rooms with at least one member.
    pub rooms: usize,
    /// Times a user went from no socket to one.
    pub users_went_online: u64,
    /// Times a user went from one socket to none.
    pub users_went_offline: u64,
}

/// The central hub: connections, rooms, users and presence. Cloning is cheap and every
/// clone shares the same state.
///
/// # Concurrency
///
/// Every method is safe to call from any thread or task. The `async` methods never await:
/// each completes on its first poll and never waits for a slow client.
///
/// The message paths — [`send_to`](Self::send_to), [`send_to_user`](Self::send_to_user),
/// [`broadcast_to_room`](Self::broadcast_to_room),
/// [`broadcast_to_room_except`](Self::broadcast_to_room_except) and
/// [`broadcast_all`](Self::broadcast_all) — acquire no `Mutex` or `RwLock`. Sockets, rooms and
/// users are found through sharded copy-on-write maps, each shard an arc-swap cell: a lookup
/// is a wait-free load and a hash probe. A room's members are a copy-on-write snapshot in an
/// arc-swap cell, walked without a lock. Pushing into a socket's queue is a compare-and-swap
/// plus a lock-free segment-queue push. The message itself is a shared `Bytes` handle: fan-out
/// bumps a reference count per recipient and never copies the payload.
///
/// Membership changes (register, unregister, join, leave) serialize per socket and per room
/// on small mutexes and publish new snapshots. They are linearizable: a join that returned
/// before a broadcast began is seen by it; a leave that returned is not; an `unregister`
/// racing a `join_room` of the same socket never leaves the socket in a room.
///
/// # Examples
///
/// ```
/// use nucleus_stream::{channel, QueueConfig, SocketMessage, StreamHub, WebSocket};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let hub = StreamHub::new();
/// let (tx, mut rx) = channel(QueueConfig::default());
/// let socket = WebSocket::new("conn-1", tx);
/// hub.register(socket.clone()).await?;
/// hub.join_room(&socket.id, "general").await?;
/// let report = hub.broadcast_to_room("general", SocketMessage::text("Hello everyone!")).await?;
/// assert_eq!(report.queued, 1);
/// assert_eq!(rx.recv().await, Some(SocketMessage::text("Hello everyone!")));
/// hub.unregister(&socket.id).await;
/// assert!(hub.list_rooms().await.is_empty());
/// # Ok::<(), nucleus_stream::StreamError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct StreamHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    config: HubConfig,
    sockets: ShardedIndex<Arc<SocketEntry>>,
    rooms: ShardedIndex<Arc<RoomCell>>,
    /// Room logs of the rooms with history (`src/history.rs`); a log outlives the room's
    /// incarnations, so a room that empties and fills again keeps its offsets.
    logs: ShardedIndex<Arc<RoomLog>>,
    presence: Presence,
    events: PresenceEvents,
    counters: Counters,
    /// Registered sockets. Changed only inside the sockets-shard critical section that
    /// inserts or removes the socket, so it never underflows.
    connections: AtomicUsize,
    /// The cluster this hub is a node of, set once by `attach_cluster` and then only read,
    /// with the node's socket ids. Unset, it costs the message paths one acquire load.
    cluster: OnceLock<ClusterNode>,
    /// Ids for `next_socket_id` while no cluster is attached.
    local_ids: SocketIdGenerator,
}

/// The link and ids of a hub that is a cluster node (see `hub/node.rs`).
struct ClusterNode {
    link: StrArc<dyn ClusterLink>,
    ids: SocketIdGenerator,
}

mod history;
mod node;

pub use history::Published;

impl Default for StreamHub {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for StreamHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHub")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl StreamHub {
    /// A hub with the default [`HubConfig`].
    pub fn new() -> Self {
        Self::with_config(HubConfig::default())
    }

    /// A hub with the given limits.
    pub fn with_config(config: HubConfig) -> Self {
        let shards = config.shards;
        let presence_buffer = config.presence_buffer;
        Self {
            inner: Arc::new(HubInner {
                config,
                sockets: ShardedIndex::new(shards),
                rooms: ShardedIndex::new(shards),
                logs: ShardedIndex::new(shards),
                presence: Presence::new(shards),
                events: PresenceEvents::new(presence_buffer),
                counters: Counters::new(),
                connections: AtomicUsize::new(0),
                cluster: OnceLock::new(),
                local_ids: SocketIdGenerator::new("c"),
            }),
        }
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// Registers a socket. If it is authenticated, its user is online from now on.
    ///
    /// # Errors
    ///
    /// [`StreamError::SocketExists`] if a socket with the same id is registered; the hub is
    /// unchanged.
    pub async fn register(&self, socket: WebSocket) -> Result<(), StreamError> {
        self.register_now(socket).map(drop)
    }

    /// [`register`](Self::register), returning the hub's entry of the socket: a transport
    /// keeps it (one pointer) instead of a clone of the socket (56 bytes in every open
    /// connection's future).
    #[cfg(feature = "server")]
    pub(crate) fn register_entry(
        &self,
        socket: WebSocket,
    ) -> Result<Arc<SocketEntry>, StreamError> {
        self.register_now(socket)
    }

    fn register_now(&self, socket: WebSocket) -> Result<Arc<SocketEntry>, StreamError> {
        let inner = &*self.inner;
        let entry = Arc::new(SocketEntry::new(socket));
        // Held until the socket is fully registered: a racing unregister or join of this id
        // waits here instead of seeing half a registration.
        let mut state = lock(&entry.state);
        let id = &entry.socket.id;
        let inserted = inner.sockets.update(id, |map| {
            if map.contains_key(id) {
                return (false, None);
            }
            let mut next = map.clone();
            next.insert(StrArc::clone(id), Arc::clone(&entry));
            // ORDERING: exactness comes from the shard lock.
            inner.connections.fetch_add(1, Ordering::Relaxed);
            (true, Some(next))
        });
        if !inserted {
            return Err(StreamError::SocketExists(id.to_string()));
        }
        state.registered = true;
        if let Some(user) = entry.socket.user_arc() {
            inner.presence.add(user, &entry, &inner.events);
        }
        drop(state);
        if let Some(link) = self.link() {
            link.connections_changed();
            if let Some(user) = entry.socket.user_id() {
                link.user_changed(user);
            }
        }
        Ok(entry)
    }

    /// Unregisters a socket: removes it from every room (emptied rooms disappear) and from its
    /// user's devices, and closes its outbound queue with [`CloseReason::Unregistered`]
    /// (messages already queued can still be drained). Returns what it removed — the hub's
    /// handle of the socket, the rooms it left, whether its user went offline — or `None` if
    /// no socket had this id.
    pub async fn unregister(&self, socket_id: &str) -> Option<Unregistered> {
        self.unregister_now(socket_id)
    }

    /// For transports: the connection of `socket` ended for `reason`. Unregisters it (if the
    /// application has not already), counts the close in [`totals`](Self::totals), and returns
    /// the context to hand to
    /// [`StreamHandler::on_disconnect_with`](crate::StreamHandler::on_disconnect_with).
    pub async fn end_connection(&self, socket: &WebSocket, reason: DisconnectReason) -> Disconnect {
        let removed = self.unregister_now(&socket.id);
        self.inner.counters.disconnect(reason);
        Disconnect::new(socket.clone(), reason, removed)
    }

    fn unregister_now(&self, socket_id: &str) -> Option<Unregistered> {
        let inner = &*self.inner;
        let entry = inner.sockets.update(socket_id, |map| {
            let Some(entry) = map.get(socket_id) else {
                return (None, None);
            };
            let entry = Arc::clone(entry);
            let mut next = map.clone();
            next.remove(socket_id);
            // ORDERING: exactness comes from the shard lock; the socket was counted.
            inner.connections.fetch_sub(1, Ordering::Relaxed);
            (Some(entry), Some(next))
        })?;
        let mut state = lock(&entry.state);
        state.registered = false;
        let rooms = std::mem::take(&mut state.rooms);
        for name in &rooms {
            self.leave_cell(&entry, name);
        }
        let went_offline = match entry.socket.user_arc() {
            Some(user) => inner.presence.remove(user, &entry, &inner.events),
            None => false,
        };
        drop(state);
        if let Some(link) = self.link() {
            link.connections_changed();
            if let Some(user) = entry.socket.user_id() {
                link.user_changed(user);
            }
            for name in &rooms {
                link.room_changed(name);
            }
        }
        entry
            .socket
            .sender()
            .shared()
            .close(CloseReason::Unregistered);
        Some(Unregistered {
            socket: entry.socket.clone(),
            rooms: rooms.into_vec(),
            went_offline,
        })
    }

    fn check_room_name(&self, room: &str) -> Result<(), StreamError> {
        let max = self.inner.config.max_room_name_len;
        if room.is_empty() {
            Err(StreamError::EmptyRoomName)
        } else if room.len() > max {
            Err(StreamError::RoomNameTooLong {
                len: room.len(),
                max,
            })
        } else {
            Ok(())
        }
    }

    /// Adds a socket to a room, creating the room if needed. Returns `true` if the socket
    /// joined now, `false` if it was already a member (joining twice is harmless).
    ///
    /// # Errors
    ///
    /// [`StreamError::SocketNotFound`] if the socket is not registered;
    /// [`StreamError::EmptyRoomName`] / [`StreamError::RoomNameTooLong`] for a bad name;
    /// [`StreamError::TooManyRooms`] if the socket is at its room limit.
    pub async fn join_room(&self, socket_id: &str, room: &str) -> Result<bool, StreamError> {
        self.join_now(socket_id, room)
    }

    fn join_now(&self, socket_id: &str, room: &str) -> Result<bool, StreamError> {
        self.check_room_name(room)?;
        let inner = &*self.inner;
        let not_found = || StreamError::SocketNotFound(socket_id.to_string());
        let entry = inner.sockets.get(socket_id).ok_or_else(not_found)?;
        let mut state = lock(&entry.state);
        if !state.registered {
            return Err(not_found());
        }
        if state.rooms.iter().any(|r| &**r == room) {
            return Ok(false);
        }
        let max = inner.config.max_rooms_per_socket;
        if state.rooms.len() >= max {
            return Err(StreamError::TooManyRooms {
                socket: socket_id.to_string(),
                max,
            });
        }
        // Fast path: the room exists and is alive; no index write.
        let mut cell = inner.rooms.get(room);
        loop {
            let current = match cell.take() {
                Some(c) => c,
                None => self.live_room(room),
            };
            match current.insert(&entry, &inner.events) {
                JoinOutcome::Joined | JoinOutcome::AlreadyMember => {
                    state.rooms.push(StrArc::clone(&current.name));
                    drop(state);
                    if let Some(link) = self.link() {
                        link.room_changed(room);
                    }
                    return Ok(true);
                }
                // Emptied meanwhile: get (or make) its successor and retry.
                JoinOutcome::Dead => {}
            }
        }
    }

    /// The live room of this name, created (or put in place of a dead one) if needed.
    fn live_room(&self, room: &str) -> Arc<RoomCell> {
        // Outside the rooms shard lock: the logs index has its own.
        let log = self.log_for(room);
        self.inner.rooms.update(room, |map| match map.get(room) {
            Some(cell) if !cell.is_dead() => (Arc::clone(cell), None),
            _ => {
                let cell = Arc::new(RoomCell::new(StrArc::from(room), log));
                let mut next = map.clone();
                next.insert(StrArc::clone(&cell.name), Arc::clone(&cell));
                (cell, Some(next))
            }
        })
    }

    /// Removes a socket from a room's membership and, if that emptied it, the room from the
    /// index (only that incarnation: a successor created meanwhile stays).
    fn leave_cell(&self, entry: &SocketEntry, room: &str) {
        let Some(cell) = self.inner.rooms.get(room) else {
            return;
        };
        if let LeaveOutcome::Left { now_empty: true } = cell.remove(entry, &self.inner.events) {
            self.inner.rooms.update(room, |map| match map.get(room) {
                Some(current) if Arc::ptr_eq(current, &cell) => {
                    let mut next = map.clone();
                    next.remove(room);
                    ((), Some(next))
                }
                _ => ((), None),
            });
        }
    }

    /// Removes a socket from a room. Returns `true` if it was a member. A room left empty
    /// disappears.
    ///
    /// # Errors
    ///
    /// [`StreamError::SocketNotFound`] if the socket is not registered;
    /// [`StreamError::EmptyRoomName`] / [`StreamError::RoomNameTooLong`] for a bad name.
    pub async fn leave_room(&self, socket_id: &str, room: &str) -> Result<bool, StreamError> {
        self.leave_now(socket_id, room)
    }

    fn leave_now(&self, socket_id: &str, room: &str) -> Result<bool, StreamError> {
        self.check_room_name(room)?;
        let not_found = || StreamError::SocketNotFound(socket_id.to_string());
        let entry = self.inner.sockets.get(socket_id).ok_or_else(not_found)?;
        let mut state = lock(&entry.state);
        if !state.registered {
            return Err(not_found());
        }
        let Some(i) = state.rooms.iter().position(|r| &**r == room) else {
            return Ok(false);
        };
        state.rooms.swap_remove(i);
        self.leave_cell(&entry, room);
        drop(state);
        if let Some(link) = self.link() {
            link.room_changed(room);
        }
        Ok(true)
    }

    /// Socket ids in a room, in no particular order; empty if the room does not exist.
    /// **Local**: this node's members only; with a cluster, `RedisCluster::room_members`
    /// asks the other nodes and [`cluster_room_size`](Self::cluster_room_size) counts them.
    pub async fn get_room_members(&self, room: &str) -> Vec<String> {
        self.local_member_ids(room)
    }

    /// Rooms a socket is in; empty if it is not registered.
    pub async fn get_socket_rooms(&self, socket_id: &str) -> Vec<String> {
        self.inner
            .sockets
            .with(socket_id, |entry| {
                lock(&entry.state)
                    .rooms
                    .iter()
                    .map(|r| r.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a registered socket is in a room (a look at the socket's own room list, not a
    /// scan of the room).
    pub async fn is_in_room(&self, socket_id: &str, room: &str) -> bool {
        self.inner
            .sockets
            .with(socket_id, |entry| {
                lock(&entry.state).rooms.iter().any(|r| &**r == room)
            })
            .unwrap_or(false)
    }

    /// Names of all rooms with at least one member. **Local**: rooms with members on this
    /// node; [`cluster_list_rooms`](Self::cluster_list_rooms) is the cluster-wide form.
    pub async fn list_rooms(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.inner.rooms.for_each(|name, cell| {
            if cell.load().len() > 0 {
                out.push(name.to_string());
            }
        });
        out
    }

    /// A snapshot of a room, or `None` if it does not exist. **Local**: this node's members.
    pub async fn get_room(&self, room: &str) -> Option<Room> {
        let cell = self.inner.rooms.get(room)?;
        let members = cell.load_full();
        (members.len() > 0).then(|| Room::new(StrArc::clone(&cell.name), members))
    }

    /// Queues a message for one socket.
    ///
    /// # Errors
    ///
    /// [`StreamError::SocketNotFound`] if no socket has this id; [`StreamError::SendFailed`]
    /// if its queue is closed or refused the message (full).
    ///
    /// With a cluster attached, a socket registered on another node (its id names that node,
    /// see [`next_socket_id`](Self::next_socket_id)) is reached through the cluster: `Ok`
    /// then means handed to the cluster (delivery at most once), and
    /// [`StreamError::SendFailed`] that the cluster could not take it.
    pub async fn send_to(&self, socket_id: &str, msg: SocketMessage) -> Result<(), StreamError> {
        let mut slot = Some(msg);
        let pushed = self.inner.sockets.with(socket_id, |entry| {
            slot.take().map(|m| {
                let len = m.len();
                let outcome = entry.socket.sender().shared().push(SharedMessage::new(m));
                let mut report = BroadcastReport::default();
                match &outcome {
                    Ok(queued) => report.record(Ok(*queued)),
                    Err(PushError::Full(_)) => report.dropped = 1,
                    Err(PushError::Closed(_)) => report.closed = 1,
                }
                self.inner.counters.outbound(&report, len);
                outcome
            })
        });
        match pushed.flatten() {
            None => match (self.link(), slot) {
                (Some(link), Some(msg)) => link.send_to_remote(socket_id, &msg),
                _ => Err(StreamError::SocketNotFound(socket_id.to_string())),
            },
            Some(Ok(_)) => Ok(()),
            Some(Err(PushError::Full(_) | PushError::Closed(_))) => {
                Err(StreamError::SendFailed(socket_id.to_string()))
            }
        }
    }

    /// Queues a message for every member of a room. A room that does not exist has no
    /// members: the result is `Ok` with zero recipients.
    ///
    /// # Errors
    ///
    /// [`StreamError::EmptyRoomName`] / [`StreamError::RoomNameTooLong`] for a bad name.
    pub async fn broadcast_to_room(
        &self,
        room: &str,
        msg: SocketMessage,
    ) -> Result<BroadcastReport, StreamError> {
        self.broadcast_room_now(room, msg, None)
    }

    /// Queues a message for every member of a room except one socket (typically the sender).
    ///
    /// # Errors
    ///
    /// As [`broadcast_to_room`](Self::broadcast_to_room).
    pub async fn broadcast_to_room_except(
        &self,
        room: &str,
        msg: SocketMessage,
        except_socket_id: &str,
    ) -> Result<BroadcastReport, StreamError> {
        self.broadcast_room_now(room, msg, Some(except_socket_id))
    }

    /// Queues a message for this hub's own members of a room only: it is not forwarded to
    /// the other nodes of a cluster and not kept in the room's history (it has no position).
    ///
    /// For what every node derives by itself from cluster-wide state, such as a presence
    /// diff built from the (cluster-wide) [presence events](Self::subscribe_presence): sent
    /// with [`broadcast_to_room`](Self::broadcast_to_room) by every node, each member would
    /// receive one copy per node. Without a cluster it is `broadcast_to_room` minus the
    /// history.
    ///
    /// # Errors
    ///
    /// As [`broadcast_to_room`](Self::broadcast_to_room).
    ///
    /// # Examples
    ///
    /// ```
    /// use nucleus_stream::{
    ///     HistoryConfig, HubConfig, QueueConfig, SocketMessage, StreamHub, WebSocket, channel,
    /// };
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let history = HistoryConfig::default().prefix(""); // every room keeps a history
    /// let hub = StreamHub::with_config(HubConfig::default().history(history));
    /// let (tx, mut rx) = channel(QueueConfig::default());
    /// hub.register(WebSocket::new("a", tx)).await?;
    /// hub.join_room("a", "news").await?;
    /// let report = hub.broadcast_to_local_members("news", SocketMessage::text("hi")).await?;
    /// assert_eq!(report.queued, 1);
    /// assert_eq!(rx.recv().await, Some(SocketMessage::text("hi")));
    /// // Not in the history: the room's first logged message gets offset 1.
    /// let published = hub
    ///     .publish_to_room("news", None, |pos| SocketMessage::text(format!("#{}", pos.offset)))
    ///     .await?;
    /// assert_eq!(published.position.map(|p| p.offset), Some(1));
    /// # Ok::<(), nucleus_stream::StreamError>(())
    /// # }).unwrap();
    /// ```
    pub async fn broadcast_to_local_members(
        &self,
        room: &str,
        msg: SocketMessage,
    ) -> Result<BroadcastReport, StreamError> {
        self.check_room_name(room)?;
        Ok(self.deliver_room(room, &SharedMessage::new(msg), None).0)
    }

    fn broadcast_room_now(
        &self,
        room: &str,
        msg: SocketMessage,
        except: Option<&str>,
    ) -> Result<BroadcastReport, StreamError> {
        self.check_room_name(room)?;
        if self.inner.config.history.is_enabled() {
            if let Some(logged) = self.logged_room(room) {
                let (log, cell) = logged;
                let (_, report) = self.publish_logged(&log, cell.as_ref(), room, except, |_| msg);
                return Ok(report);
            }
        }
        // Wrapped once: every recipient's queue gets a clone of this one handle.
        let msg = SharedMessage::new(msg);
        let (report, except_local) = self.deliver_room(room, &msg, except);
        if let Some(link) = self.link() {
            let except = except.map(|id| Except::new(id, except_local));
            link.room_broadcast(room, &msg, except);
        }
        Ok(report)
    }

    /// Local delivery of a room broadcast; also says whether the excluded socket is local.
    pub(crate) fn deliver_room(
        &self,
        room: &str,
        msg: &SharedMessage,
        except: Option<&str>,
    ) -> (BroadcastReport, bool) {
        self.deliver_to_members(room, except, |members, except| {
            let report = members.broadcast(msg, except);
            (report, (report.queued * msg.len()) as u64)
        })
    }

    /// Local delivery of a burst to a room, recipient-major ([`Members::broadcast_burst`]);
    /// also says whether the excluded socket is local.
    pub(crate) fn deliver_room_burst(
        &self,
        room: &str,
        msgs: &[SharedMessage],
        except: Option<&str>,
    ) -> (BroadcastReport, bool) {
        self.deliver_to_members(room, except, |members, except| {
            members.broadcast_burst(msgs, except)
        })
    }

    /// Runs `deliver` on the room's current members (if the room exists) with the excluded
    /// socket's entry, counts what it queued (its report and bytes) in the totals, and says
    /// whether the excluded socket is local.
    fn deliver_to_members(
        &self,
        room: &str,
        except: Option<&str>,
        deliver: impl FnOnce(&Members, *const SocketEntry) -> (BroadcastReport, u64),
    ) -> (BroadcastReport, bool) {
        // Hold the excluded entry so its address cannot be reused by a new socket while we
        // compare against it.
        let except = except.and_then(|id| self.inner.sockets.get(id));
        let except_ptr = except.as_ref().map_or(ptr::null(), Arc::as_ptr);
        let (report, bytes) = self
            .inner
            .rooms
            .with(room, |cell| deliver(&cell.load(), except_ptr))
            .unwrap_or_default();
        self.inner.counters.outbound_bytes(&report, bytes);
        (report, except.is_some())
    }

    /// Queues a message for every member of several rooms, each recipient once however many
    /// of the rooms it is in (Socket.IO's `to([a, b])`), optionally except one socket.
    ///
    /// With a cluster attached, "once" holds cluster-wide: the other nodes get the message
    /// once for all the rooms (on each listed room's channel, with one id that a node
    /// delivers once, to the union of its members of the rooms).
    ///
    /// Rooms with a history are served around their logs: the message is not stored, carries
    /// no position and is not ordered with [`publish_to_room`](Self::publish_to_room) (each
    /// history room is its own positioned stream, which "once across rooms" cannot be). To
    /// reach a history room's stream, publish to it.
    ///
    /// # Errors
    ///
    /// [`StreamError::EmptyRoomName`] / [`StreamError::RoomNameTooLong`] if any name is bad;
    /// nothing is sent then.
    ///
    /// # Examples
    ///
    /// ```
    /// # use nucleus_stream::{channel, QueueConfig, SocketMessage, StreamHub, WebSocket};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let hub = StreamHub::new();
    /// let (tx, mut rx) = channel(QueueConfig::default());
    /// hub.register(WebSocket::new("a", tx)).await?;
    /// hub.join_room("a", "x").await?;
    /// hub.join_room("a", "y").await?;
    /// let report = hub.broadcast_to_rooms(["x", "y"], SocketMessage::text("once"), None).await?;
    /// assert_eq!(report.queued, 1);
    /// assert_eq!(rx.len(), 1);
    /// # Ok::<(), nucleus_stream::StreamError>(())
    /// # }).unwrap();
    /// ```
    pub async fn broadcast_to_rooms<I, S>(
        &self,
        rooms: I,
        msg: SocketMessage,
        except_socket_id: Option<&str>,
    ) -> Result<BroadcastReport, StreamError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let names: SmallVec<[S; 4]> = rooms.into_iter().collect();
        for name in &names {
            self.check_room_name(name.as_ref())?;
        }
        if let [only] = names.as_slice() {
            return self.broadcast_room_now(only.as_ref(), msg, except_socket_id);
        }
        let names: SmallVec<[&str; 4]> = names.iter().map(AsRef::as_ref).collect();
        let msg = SharedMessage::new(msg);
        let (report, except_local) = self.deliver_rooms(&names, &msg, except_socket_id);
        if let Some(link) = self.link() {
            let except = except_socket_id.map(|id| Except::new(id, except_local));
            link.rooms_broadcast(&names, &msg, except);
        }
        Ok(report)
    }

    /// Local delivery to the members of several rooms, each once (`except` excluded if it
    /// is registered here); returns the report and whether `except` is registered here.
    pub(crate) fn deliver_rooms(
        &self,
        names: &[&str],
        msg: &SharedMessage,
        except: Option<&str>,
    ) -> (BroadcastReport, bool) {
        // Held so that its address cannot be reused by a new socket while we compare.
        let except = except.and_then(|id| self.inner.sockets.get(id));
        let except_ptr = except.as_ref().map_or(ptr::null(), Arc::as_ptr);
        let snapshots: SmallVec<[_; 4]> = names
            .iter()
            .filter_map(|name| self.inner.rooms.with(name, |cell| cell.load_full()))
            .collect();
        let mut seen = std::collections::HashSet::<*const SocketEntry>::new();
        let mut report = BroadcastReport::default();
        for members in &snapshots {
            for entry in members.entries() {
                let key = entry as *const SocketEntry;
                if key != except_ptr && seen.insert(key) {
                    report.record(entry.socket.sender().shared().push(msg.clone()));
                }
            }
        }
        self.inner.counters.outbound(&report, msg.len());
        (report, except.is_some())
    }

    /// Queues a message for every registered socket; returns how many queued it.
    /// [`broadcast_all_report`](Self::broadcast_all_report) also says how many refused.
    ///
    /// With a cluster attached it also reaches every socket on the other nodes (at most
    /// once); the count and the report are this node's.
    pub async fn broadcast_all(&self, msg: SocketMessage) -> usize {
        self.broadcast_all_report(msg).await.queued
    }

    /// As [`broadcast_all`](Self::broadcast_all), with the full (local) report.
    pub async fn broadcast_all_report(&self, msg: SocketMessage) -> BroadcastReport {
        let msg = SharedMessage::new(msg);
        let report = self.deliver_all(&msg);
        if let Some(link) = self.link() {
            link.broadcast_all_remote(&msg);
        }
        report
    }

    /// Local delivery to every socket.
    pub(crate) fn deliver_all(&self, msg: &SharedMessage) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        self.inner.sockets.for_each(|_, entry| {
            report.record(entry.socket.sender().shared().push(msg.clone()));
        });
        self.inner.counters.outbound(&report, msg.len());
        report
    }

    /// Queues a message for every socket (device) of a user. An offline user has no devices:
    /// the result is `Ok` with zero recipients.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for limits without breaking callers.
    pub async fn send_to_user(
        &self,
        user_id: &str,
        msg: SocketMessage,
    ) -> Result<BroadcastReport, StreamError> {
        let msg = SharedMessage::new(msg);
        let report = self.deliver_user(user_id, &msg);
        if let Some(link) = self.link() {
            link.send_to_user_remote(user_id, &msg);
        }
        Ok(report)
    }

    /// Local delivery to a user's devices.
    pub(crate) fn deliver_user(&self, user_id: &str, msg: &SharedMessage) -> BroadcastReport {
        self.inner
            .presence
            .with_devices(user_id, |devices| {
                let mut report = BroadcastReport::default();
                for entry in &devices.0 {
                    report.record(entry.socket.sender().shared().push(msg.clone()));
                }
                self.inner.counters.outbound(&report, msg.len());
                report
            })
            .unwrap_or_default()
    }

    /// Local delivery to one socket (no cluster fallback).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn deliver_to(&self, socket_id: &str, msg: SocketMessage) -> bool {
        matches!(
            self.inner.sockets.with(socket_id, |entry| {
                entry.socket.sender().shared().push(SharedMessage::new(msg))
            }),
            Some(Ok(_))
        )
    }

    /// Whether the user has at least one registered socket — on any node when a cluster is
    /// attached.
    pub async fn is_user_online(&self, user_id: &str) -> bool {
        self.inner.presence.is_online(user_id)
            || self.link().is_some_and(|l| l.remote_user_online(user_id))
    }

    /// Users with at least one registered socket, in no particular order — on any node when a
    /// cluster is attached (each user once).
    pub async fn online_users(&self) -> Vec<String> {
        let mut users = self.inner.presence.online_users();
        if let Some(link) = self.link() {
            for user in link.remote_users() {
                if !self.inner.presence.is_online(&user) {
                    users.push(user);
                }
            }
        }
        users
    }

    /// Registered sockets — on every node when a cluster is attached.
    pub async fn connection_count(&self) -> usize {
        self.local_connection_count() + self.link().map_or(0, |l| l.remote_connections())
    }

    /// Users with at least one registered socket — on any node when a cluster is attached.
    pub async fn online_user_count(&self) -> usize {
        match self.link() {
            None => self.inner.presence.online_count(),
            Some(link) => {
                let remote_only = link
                    .remote_users()
                    .iter()
                    .filter(|u| !self.inner.presence.is_online(u))
                    .count();
                self.inner.presence.online_count() + remote_only
            }
        }
    }

    /// Whether a socket with this id is registered.
    pub async fn is_registered(&self, socket_id: &str) -> bool {
        self.inner.sockets.with(socket_id, |_| ()).is_some()
    }

    /// The hub's handle of a registered socket.
    pub async fn get_socket(&self, socket_id: &str) -> Option<WebSocket> {
        self.inner.sockets.with(socket_id, |e| e.socket.clone())
    }

    /// Counters describing the hub now (each read without a lock; not one atomic snapshot).
    pub fn stats(&self) -> HubStats {
        let (went_online, went_offline) = self.inner.presence.transitions();
        let mut rooms = 0;
        self.inner.rooms.for_each(|_, cell| {
            if cell.load().len() > 0 {
                rooms += 1;
            }
        });
        HubStats {
            // ORDERING: statistics.
            connections: self.inner.connections.load(Ordering::Relaxed),
            online_users: self.inner.presence.online_count(),
            rooms,
            users_went_online: went_online,
            users_went_offline: went_offline,
        }
    }

    /// Running totals since the hub was made: messages and bytes in and out, drops, closes by
    /// reason (each counter read without a lock; not one atomic snapshot).
    pub fn totals(&self) -> HubTotals {
        self.inner.counters.snapshot()
    }

    /// For transports: a message of `bytes` payload bytes arrived from a client (`rate_limited`
    /// if the transport refused it). Counted in [`totals`](Self::totals).
    pub fn record_inbound(&self, bytes: usize, rate_limited: bool) {
        self.inner.counters.inbound(bytes, rate_limited);
    }

    /// The outbound queue of one registered socket: queued messages and bytes, drops.
    pub async fn socket_stats(&self, socket_id: &str) -> Option<SocketStats> {
        self.inner
            .sockets
            .with(socket_id, |entry| SocketStats::of(&entry.socket))
    }

    /// The `n` registered sockets with the most queued bytes (ties: more messages first),
    /// deepest first: where a backlog builds up. One lock-free pass over every socket.
    pub async fn deepest_queues(&self, n: usize) -> Vec<SocketStats> {
        let mut heap = std::collections::BinaryHeap::new();
        if n == 0 {
            return Vec::new();
        }
        self.inner.sockets.for_each(|_, entry| {
            let sender = entry.socket.sender();
            let depth = (sender.queued_bytes(), sender.len());
            if heap.len() < n {
                heap.push(std::cmp::Reverse((depth, StrArc::clone(&entry.socket.id))));
            } else if heap.peek().is_some_and(|min| min.0.0 < depth) {
                heap.pop();
                heap.push(std::cmp::Reverse((depth, StrArc::clone(&entry.socket.id))));
            }
        });
        let mut ids: Vec<_> = heap.into_iter().map(|r| r.0).collect();
        ids.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.0));
        ids.into_iter()
            .filter_map(|(_, id)| self.inner.sockets.with(&id, |e| SocketStats::of(&e.socket)))
            .collect()
    }

    /// Subscribes to this hub's presence events (see [`PresenceSubscription`]): a user online
    /// or offline, a member's first device joining a room or last leaving. The subscription
    /// sees the transitions that happen after this returns.
    ///
    /// With a cluster attached (feature `redis`), `Online` / `Offline` are the
    /// **cluster-wide** transitions: `Online` when the user's first device on any node
    /// appears, `Offline` when its last device anywhere is gone (a node that dies takes
    /// offline, at its presence TTL, only the users connected nowhere else); every node's
    /// subscribers get each once, as that node learns of it. `Joined` / `Left` likewise: the
    /// member's first device on any node entering the room, its last one anywhere leaving.
    /// ([`room_presence`](Self::room_presence) stays this node's.)
    pub fn subscribe_presence(&self) -> PresenceSubscription {
        self.inner.events.subscribe()
    }

    /// Who is present in a room now: each user once however many of its devices are in,
    /// each anonymous socket; sorted. Empty if the room does not exist. (The state a
    /// presence diff applies to.) With a cluster, this node's members only.
    pub async fn room_presence(&self, room: &str) -> Vec<PresenceKey> {
        self.local_room_presence(room)
    }

    /// Messages and bytes waiting in every outbound queue, and the longest queue.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn queue_levels(&self) -> (usize, usize, usize) {
        let (mut messages, mut bytes, mut deepest) = (0, 0, 0);
        self.inner.sockets.for_each(|_, entry| {
            let sender = entry.socket.sender();
            let len = sender.len();
            messages += len;
            bytes += sender.queued_bytes();
            deepest = deepest.max(len);
        });
        (messages, bytes, deepest)
    }

    /// The hub's event source, for a cluster layer's relay (see `presence_events`).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn presence_events(&self) -> &PresenceEvents {
        &self.inner.events
    }
}
