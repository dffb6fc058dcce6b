//! Clustering through Redis (feature `redis`): rooms, direct and user messages, and presence
//! across several processes.
//!
//! ```no_run
//! use nucleus_stream::StreamHub;
//! use nucleus_stream::cluster::{ClusterConfig, RedisCluster};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = StreamHub::new();
//! let cluster = RedisCluster::start(&hub, ClusterConfig::new("redis://127.0.0.1:6379"))?;
//! // Use `hub` exactly as on one node; broadcasts now reach every node's members.
//! # cluster.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! The hub core stays free of I/O: it calls a [`ClusterLink`](crate::cluster_link::ClusterLink)
//! — synchronously, never waiting — after local delivery and when local membership or
//! presence changes. This module implements that link over Redis pub/sub with three
//! background tokio tasks (see `backend.rs`): a pipelined **publisher** fed by a bounded
//! queue, a **subscriber**, and a **presence** task that also probes the subscription. They
//! run on a thread of their own by default ([`ClusterConfig::own_thread`]), so cross-node
//! messages never queue behind the application's tasks. More: `docs/cluster.md`.
//!
//! Channels (`P` is [`ClusterConfig::prefix`], default `nucleus`):
//!
//! | channel          | carries                                   | subscribed by                 |
//! |------------------|-------------------------------------------|-------------------------------|
//! | `P:room:R`       | broadcasts to room R                      | nodes with local members of R |
//! | `P:node:N`       | direct and user messages for node N; N's probes | node N                  |
//! | `P:all`          | `broadcast_all`                           | every node                    |
//! | `P:presence`     | presence full states, deltas, hello, goodbye | every node                 |
//!
//! - **One PUBLISH per broadcast**, to the room's channel; Redis fans it out to the nodes that
//!   have members (each subscribes on its first local member and unsubscribes after its
//!   last, batching changes), so a node without members receives none of a room's traffic.
//!   Its own echo is dropped by the origin (the envelope names the origin node).
//! - **A broadcast never waits on Redis**: local members are served on the lock-free path,
//!   then the message (a reference-counted `Bytes`, not a copy) goes into a bounded queue. A
//!   full queue fails the remote part at once and counts it
//!   ([`ClusterStats::backlog_full`]).
//! - **Order**: one publisher task, one connection, pipelines in queue order: the messages one
//!   node sends to one room reach every other node in the order sent.
//! - **At most once across nodes**, as in Centrifugo and Socket.IO's Redis adapter. Losses are
//!   counted: publishes that failed or were discarded while Redis was unreachable
//!   ([`ClusterStats::publish_failed`]), and messages a receiver missed, detected by a
//!   sequence number per (origin node, channel) in every envelope ([`ClusterStats::gaps`]).
//!   A node that joins a room misses what other nodes publish before its SUBSCRIBE lands
//!   (milliseconds; [`RedisCluster::synced`] waits for it).
//! - **Direct messages**: socket ids made by
//!   [`StreamHub::next_socket_id`](crate::StreamHub::next_socket_id) are `"<node>.<n>"`, so
//!   `send_to` of a socket on another node publishes straight to that node's channel.
//!   **User messages** go to each node whose presence lists the user.
//! - **Presence**: every node announces deltas (absolute counts, coalesced over
//!   [`ClusterConfig::presence_coalesce`]) and a full state every
//!   [`ClusterConfig::heartbeat`] with a TTL ([`ClusterConfig::node_ttl`]); the others keep a
//!   replica and forget a node whose TTL ran out (a node killed without a goodbye disappears
//!   within `node_ttl` + one probe tick: ≤ 14 s by default) or that said goodbye
//!   ([`RedisCluster::shutdown`]). The replica lives in each node's memory (not in Redis
//!   keys): queries never touch the network, and a node that (re)connects sends a *hello*
//!   that makes every other node send its full state at once.
//! - **Presence events** ([`StreamHub::subscribe_presence`](crate::StreamHub::subscribe_presence)):
//!   `Online` / `Offline` fire on the cluster-wide transition — a user's first device on
//!   any node, its last device anywhere, a dead node's users (at its TTL) unless connected
//!   elsewhere — once on every node's stream; room `Joined` / `Left` on a member's first
//!   device anywhere in the room and its last one anywhere out (the announcements carry the
//!   (room, member) pairs).
//! - **`broadcast_to_rooms`** reaches each remote member once: one envelope per listed
//!   room's channel, sharing an id; a node delivers the first copy to the union of its
//!   members of the rooms and drops the others.
//! - **Faults**: publisher and subscriber reconnect with exponential backoff
//!   ([`ClusterConfig::reconnect_min`] to [`ClusterConfig::reconnect_max`]); the subscriber
//!   resubscribes every channel it needs and the node re-announces its presence. A
//!   subscription that stalls silently (no error, no messages — seen behind failovers,
//!   Centrifugo issue 1189) is found by the probe: every [`ClusterConfig::probe_interval`]
//!   the node publishes a nonce on its own channel and expects it back within
//!   [`ClusterConfig::probe_timeout`]; if the publish succeeded and the nonce does not come
//!   back, the subscriber connection is rebuilt ([`ClusterStats::probe_stalls`]). Bad or
//!   foreign data on a channel is dropped and counted ([`ClusterStats::bad_messages`]).
//!
//! The envelope (see `envelope.rs`) is versioned binary: magic `NS`, version, kind, flags,
//! sequence number, and an epoch and offset at fixed positions reserved for room history
//! (issue 13): a history room's publish is one script (`EVALSHA`) that assigns the offset,
//! appends to the room's Redis Stream, writes epoch and offset into the envelope and
//! publishes — still one command per broadcast, in the same pipeline. Every node, the
//! publisher's included, delivers a history room's messages as they come back on its
//! subscription, in offset order, and keeps them in its ring; a join with a position the
//! ring does not cover reads the rest from the stream (`XRANGE`). Keys and script:
//! `history.rs`; design and measurements: `docs/history.md`.

mod backend;
mod envelope;
mod events;
mod history;
mod link;
mod presence;

use std::sync::Arc as StrArc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::hub::StreamHub;
use crate::sync::Ordering;
use link::{Counters, RedisLink, Shared};

/// Settings of a cluster node.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nucleus_stream::cluster::ClusterConfig;
/// let config = ClusterConfig::new("redis://127.0.0.1:6379")
///     .node_id("web-1")
///     .heartbeat(Duration::from_secs(2))
///     .node_ttl(Duration::from_secs(6));
/// # drop(config);
/// ```
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    url: String,
    node_id: Option<String>,
    prefix: String,
    heartbeat: Duration,
    node_ttl: Duration,
    probe_interval: Duration,
    probe_timeout: Duration,
    command_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    presence_coalesce: Duration,
    backlog: usize,
    max_batch: usize,
    own_thread: bool,
}

impl ClusterConfig {
    /// Defaults for the Redis at `url` (`redis://host:port[/db]`): heartbeat 4 s, node TTL
    /// 12 s, probe every 2 s with a 2 s timeout, command timeout 1 s, reconnect backoff
    /// 100 ms to 2 s, presence deltas coalesced over 10 ms, a backlog of 65,536 messages,
    /// pipelines of up to 512.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            node_id: None,
            prefix: "nucleus".to_string(),
            heartbeat: Duration::from_secs(4),
            node_ttl: Duration::from_secs(12),
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(1),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            presence_coalesce: Duration::from_millis(10),
            backlog: 65_536,
            max_batch: 512,
            own_thread: true,
        }
    }

    /// This node's id (unique in the cluster; no `.`; at most 64 bytes). Default: random.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(id.into());
        self
    }

    /// Prefix of every channel name (several clusters can share one Redis).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How often the node announces its full presence state.
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.heartbeat = d.max(Duration::from_millis(1));
        self
    }

    /// How long the others remember this node after its last announcement (keep it ≥ 2
    /// heartbeats).
    pub fn node_ttl(mut self, d: Duration) -> Self {
        self.node_ttl = d.max(Duration::from_millis(1));
        self
    }

    /// How often the subscription is probed.
    pub fn probe_interval(mut self, d: Duration) -> Self {
        self.probe_interval = d.max(Duration::from_millis(1));
        self
    }

    /// How long a probe may take to come back before the subscription is rebuilt.
    pub fn probe_timeout(mut self, d: Duration) -> Self {
        self.probe_timeout = d;
        self
    }

    /// Timeout of connecting and of each Redis command or pipeline.
    pub fn command_timeout(mut self, d: Duration) -> Self {
        self.command_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// First reconnect delay (doubling up to [`reconnect_max`](Self::reconnect_max)).
    pub fn reconnect_min(mut self, d: Duration) -> Self {
        self.reconnect_min = d.max(Duration::from_millis(1));
        self
    }

    /// Longest reconnect delay.
    pub fn reconnect_max(mut self, d: Duration) -> Self {
        self.reconnect_max = d.max(Duration::from_millis(1));
        self
    }

    /// How long presence changes are coalesced into one delta.
    pub fn presence_coalesce(mut self, d: Duration) -> Self {
        self.presence_coalesce = d;
        self
    }

    /// Messages that may wait for the publisher; beyond it a remote send fails at once.
    pub fn backlog(mut self, n: usize) -> Self {
        self.backlog = n.max(1);
        self
    }

    /// Whether the node's tasks (and the Redis client's connection drivers) run on a thread
    /// of their own (default `true`) instead of the caller's tokio runtime. On their own
    /// thread, cross-node messages do not queue behind the application's tasks: with 1,000
    /// busy member tasks on a 2-worker runtime, remote members' p50 fell from 0.93–1.08 ms to
    /// 0.64–0.66 ms and their p99 from 9.7–10.2 ms to 6.1–8.8 ms in the same runs
    /// (BENCHMARKS.md, "Cluster").
    pub fn own_thread(mut self, yes: bool) -> Self {
        self.own_thread = yes;
        self
    }

    /// Most messages per pipeline.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }
}

/// Why a cluster node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The Redis URL was not valid.
    #[error("invalid redis url: {0}")]
    InvalidUrl(String),
    /// The node id was empty, too long or contained a `.`.
    #[error("invalid node id {0:?}: 1 to 64 bytes, no '.'")]
    InvalidNodeId(String),
    /// The hub is already part of a cluster.
    #[error("the hub already has a cluster attached")]
    AlreadyAttached,
    /// With [`ClusterConfig::own_thread`] off: not called from within a tokio runtime.
    #[error("RedisCluster::start with own_thread(false) must run inside a tokio runtime")]
    NoRuntime,
    /// The node's own thread or its runtime could not be created.
    #[error("cannot start the cluster thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Counters and state of a cluster node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Messages (room, direct, user, all) published to Redis.
    pub published: u64,
    /// Messages lost on the way out: their PUBLISH failed or timed out, or they were
    /// discarded because Redis was unreachable.
    pub publish_failed: u64,
    /// Messages refused because the publisher's backlog was full.
    pub backlog_full: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Messages from other nodes that never arrived (sequence gaps), including those missed
    /// while this node's subscription was down and those the origin failed to publish (which
    /// the origin also counts in its `publish_failed`).
    pub gaps: u64,
    /// Foreign or malformed data received on the cluster's channels (dropped).
    pub bad_messages: u64,
    /// Successful publisher connections (1 + reconnects).
    pub publisher_connects: u64,
    /// Successful subscriber connections (1 + reconnects and rebuilds).
    pub subscriber_connects: u64,
    /// Subscriptions found stalled by the probe (and rebuilt).
    pub probe_stalls: u64,
    /// Nodes forgotten because their TTL ran out.
    pub nodes_expired: u64,
    /// Messages of rooms with history that could not go through Redis (a connection down,
    /// or the backlog full): delivered to this node's members only, without a position and
    /// not in the log (so not recoverable).
    pub history_unlogged: u64,
    /// Room channels subscribed now.
    pub subscribed_rooms: u64,
    /// Other live nodes.
    pub nodes: usize,
    /// Whether both connections are up now.
    pub connected: bool,
}

/// The answer of [`RedisCluster::room_members`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomMembers {
    /// Socket ids of the members, this node's first, in no particular order.
    pub members: Vec<String>,
    /// Nodes with members that did not answer within the timeout.
    pub unanswered: Vec<String>,
}

/// A hub's membership in a Redis cluster: the background tasks and their counters.
///
/// Dropping it (or [`abort`](Self::abort)) stops the tasks without a goodbye, as a crash
/// would; [`shutdown`](Self::shutdown) says goodbye first, so the others forget this node at
/// once.
///
/// The tasks hold a clone of the hub: the hub lives at least as long as its `RedisCluster`.
pub struct RedisCluster {
    hub: StreamHub,
    shared: StrArc<Shared>,
    control: mpsc::UnboundedSender<link::Outbound>,
    tasks: Vec<JoinHandle<()>>,
    /// The node's own thread, if any: dropping this sender ends it (and its runtime).
    thread: Option<(
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("node", &&*self.shared.node)
            .field("stats", &self.stats())
            .finish()
    }
}

fn random_node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("n{:012x}", h.finish() & 0xffff_ffff_ffff)
}

impl RedisCluster {
    /// Makes `hub` a node of the cluster on the Redis at `config`'s URL and starts the
    /// background tasks (on their own thread, or with [`ClusterConfig::own_thread`] off on
    /// the current tokio runtime). Returns at once: the connections are made in the
    /// background (local delivery works meanwhile); [`ready`](Self::ready) waits for them.
    ///
    /// # Errors
    ///
    /// [`ClusterError::InvalidUrl`], [`ClusterError::InvalidNodeId`],
    /// [`ClusterError::AlreadyAttached`], [`ClusterError::Thread`]; with `own_thread` off,
    /// [`ClusterError::NoRuntime`] outside a tokio runtime.
    pub fn start(hub: &StreamHub, config: ClusterConfig) -> Result<Self, ClusterError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| ClusterError::InvalidUrl(e.to_string()))?;
        let node = config.node_id.clone().unwrap_or_else(random_node_id);
        if node.is_empty() || node.len() > 64 || node.contains('.') {
            return Err(ClusterError::InvalidNodeId(node));
        }
        let shared = StrArc::new(Shared::new(
            StrArc::from(node),
            config.clone(),
            hub.config().history_config().clone(),
        ));
        let (data_tx, data_rx) = mpsc::channel(config.backlog);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let link = RedisLink {
            shared: StrArc::clone(&shared),
            out: data_tx,
        };
        let (runtime, thread) = if config.own_thread {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ClusterError::Thread)?;
            let handle = rt.handle().clone();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("nucleus-cluster-{}", shared.node))
                .spawn(move || {
                    // Runs the tasks until the handle is dropped, then drops them all.
                    let _ = rt.block_on(stop_rx);
                })
                .map_err(ClusterError::Thread)?;
            (handle, Some((stop_tx, thread)))
        } else {
            let handle =
                tokio::runtime::Handle::try_current().map_err(|_| ClusterError::NoRuntime)?;
            (handle, None)
        };
        if hub.attach_cluster(StrArc::new(link)).is_err() {
            drop(thread);
            return Err(ClusterError::AlreadyAttached);
        }
        shared.presence.install(hub);
        let tasks = vec![
            runtime.spawn(backend::publisher(
                client.clone(),
                StrArc::clone(&shared),
                hub.clone(),
                data_rx,
                control_rx,
            )),
            runtime.spawn(backend::subscriber(
                client,
                StrArc::clone(&shared),
                hub.clone(),
                control_tx.clone(),
            )),
            runtime.spawn(backend::presence_task(
                StrArc::clone(&shared),
                hub.clone(),
                control_tx.clone(),
            )),
        ];
        Ok(Self {
            hub: hub.clone(),
            shared,
            control: control_tx,
            tasks,
            thread,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.node
    }

    /// The other live nodes' ids.
    pub fn nodes(&self) -> Vec<String> {
        self.shared.replica().nodes()
    }

    /// Counters and state now.
    pub fn stats(&self) -> ClusterStats {
        let c = &self.shared.counters;
        ClusterStats {
            published: Counters::get(&c.published),
            publish_failed: Counters::get(&c.publish_failed),
            backlog_full: Counters::get(&c.backlog_full),
            received: Counters::get(&c.received),
            gaps: Counters::get(&c.gaps),
            bad_messages: Counters::get(&c.bad_messages),
            publisher_connects: Counters::get(&c.publisher_connects),
            subscriber_connects: Counters::get(&c.subscriber_connects),
            probe_stalls: Counters::get(&c.probe_stalls),
            nodes_expired: Counters::get(&c.nodes_expired),
            history_unlogged: Counters::get(&c.history_unlogged),
            subscribed_rooms: Counters::get(&self.shared.subscribed_rooms),
            nodes: self.shared.replica().nodes().len(),
            connected: self.is_connected(),
        }
    }

    /// Whether the publisher and the subscriber both have a working connection.
    pub fn is_connected(&self) -> bool {
        Shared::flag(&self.shared.publisher_up) && Shared::flag(&self.shared.subscriber_up)
    }

    /// Whether every room subscription change requested so far has been applied.
    pub fn is_synced(&self) -> bool {
        // ORDERING: progress markers; see the subscriber.
        self.is_connected()
            && self.shared.subs_applied.load(Ordering::Relaxed)
                >= self.shared.subs_requested.load(Ordering::Relaxed)
    }

    /// Waits (up to `timeout`) until the node is connected; returns whether it is.
    pub async fn ready(&self, timeout: Duration) -> bool {
        self.wait(timeout, || self.is_connected()).await
    }

    /// Waits (up to `timeout`) until the node is connected and every room subscription
    /// change requested so far (joins and leaves before this call) is in place; returns
    /// whether it is. After it, broadcasts from other nodes reach this node's new members.
    pub async fn synced(&self, timeout: Duration) -> bool {
        self.wait(timeout, || self.is_synced()).await
    }

    async fn wait(&self, timeout: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The ids of `room`'s members on every node: this node's, and those of every node that
    /// announced members in it, asked through the room's channel (so only those nodes see
    /// the question) and answered on this node's channel. Waits at most `timeout` for the
    /// answers; nodes that did not answer in time are listed in
    /// [`RoomMembers::unanswered`].
    ///
    /// The hub's [`get_room_members`](crate::StreamHub::get_room_members) stays local
    /// and never waits; this is its cluster-wide form.
    pub async fn room_members(&self, room: &str, timeout: Duration) -> RoomMembers {
        let mut members = self.hub.local_member_ids(room);
        let mut waiting = self.shared.replica().nodes_of_room(room);
        if waiting.is_empty() || self.shared.is_detached() {
            return RoomMembers {
                members,
                unanswered: waiting,
            };
        }
        // ORDERING: only uniqueness matters.
        let id = self.shared.next_query.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, mut rx) = mpsc::unbounded_channel();
        crate::sync::lock(&self.shared.queries).insert(id, tx);
        let _ = self.control.send(backend::query_item(room, id));
        let deadline = tokio::time::Instant::now() + timeout;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((node, ids))) => {
                    if let Some(i) = waiting.iter().position(|n| *n == node) {
                        waiting.swap_remove(i);
                        members.extend(ids);
                    }
                }
                _ => break,
            }
        }
        crate::sync::lock(&self.shared.queries).remove(&id);
        RoomMembers {
            members,
            unanswered: waiting,
        }
    }

    /// Says goodbye (the other nodes forget this one at once) and stops the tasks. The hub
    /// goes on as a single node: its queries no longer see other nodes. Waits at most the
    /// command timeout for the goodbye to reach Redis.
    pub async fn shutdown(mut self) {
        Shared::set_flag(&self.shared.detached, true);
        let _ = self.control.send(backend::goodbye());
        let shared = StrArc::clone(&self.shared);
        self.wait(self.shared.config.command_timeout, || {
            Shared::flag(&shared.goodbye_sent) || !Shared::flag(&shared.publisher_up)
        })
        .await;
        self.stop();
    }

    /// Stops the tasks without a goodbye (what a crash looks like to the other nodes: they
    /// forget this node when its TTL runs out).
    pub fn abort(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        Shared::set_flag(&self.shared.detached, true);
        lock_clear(&self.shared, &self.hub);
        for task in self.tasks.drain(..) {
            task.abort();
        }
        // Ends the node's thread: its runtime drops what is left (connection drivers). Not
        // joined: `stop` may run inside an async context, and the thread ends on its own.
        if let Some((stop, _thread)) = self.thread.take() {
            drop(stop);
        }
    }
}

/// Forgets the other nodes; their users go offline on this node's events unless connected
/// here too.
fn lock_clear(shared: &Shared, hub: &StreamHub) {
    let mut replica = crate::sync::lock(&shared.replica);
    replica.clear();
    shared.settle_locked(&mut replica, hub);
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
