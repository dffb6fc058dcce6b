//! The guide's chat room, done right: rooms, batched presence, an error frame — never a
//! panic — for anything malformed, and Prometheus metrics on request.
//!
//! ```text
//! cargo run --release --example chat [ADDR] [OPTIONS]    # default 127.0.0.1:9001
//! cargo run --release --example chat_client [URL]        # in two other terminals
//!
//! OPTIONS
//!   --metrics ADDR            serve Prometheus text at http://ADDR/metrics
//!   --presence-window MS      coalesce presence changes over MS milliseconds (default 200)
//!   --inbound-rate N[:BURST]  per-connection message rate limit (default 50:100); `off` for none
//!   --history N               messages each room keeps for recovery (default 1000; 0: none)
//!   --redis URL               join a cluster through this Redis (needs `--features redis`)
//! ```
//!
//! Two nodes sharing rooms and presence through one Redis (feature `redis`):
//!
//! ```text
//! cargo run --release --features redis --example chat -- 127.0.0.1:9001 --redis redis://127.0.0.1:6379
//! cargo run --release --features redis --example chat -- 127.0.0.1:9002 --redis redis://127.0.0.1:6379
//! ```
//!
//! `ws://ADDR/?user=NAME` connects as user `NAME` (1–64 of `A-Z a-z 0-9 _ -`; anything else
//! is refused with 400). This is a demo of the auth hook (`ServerConfig::auth`) — a real
//! application checks a token there instead of believing the client.
//!
//! Client → server (JSON text frames):
//!
//! ```text
//! {"action":"join","room":R}
//! {"action":"join","room":R,"since":{"epoch":E,"offset":O}}   rejoin: replay what was missed
//! {"action":"leave","room":R}
//! {"action":"message","room":R,"text":T}
//! {"action":"online"}
//! {"action":"presence","room":R}
//! ```
//!
//! Server → client (JSON text frames):
//!
//! ```text
//! {"type":"message","room":R,"from":SOCKET_ID,"text":T,"epoch":E,"offset":O}
//!                                                         to every member of R, sender included
//!                                                         (epoch/offset, on every room frame:
//!                                                         its position in R's history; absent
//!                                                         without history)
//! {"type":"recovery","room":R,"recovered":B,"replayed":N,"epoch":E,"offset":O}
//!                                                         to the joiner of a join with "since",
//!                                                         after the N replayed frames; B false:
//!                                                         position not covered, nothing replayed
//!                                                         (reload state); E/O: the last position
//!                                                         replayed (continue from there)
//! {"type":"joined","room":R,"socket":SOCKET_ID,"epoch":E,"offset":O}
//!                                                         to the joiner only: it is now in R;
//!                                                         E/O: R's position at the join (the
//!                                                         live stream continues after it)
//! {"type":"left","room":R,"socket":SOCKET_ID}             to the leaver only: it is out of R
//! {"type":"presence_diff","room":R,"joins":[K..],"leaves":[K..],"epoch":E,"offset":O}
//!                                                         to every member of R, at most once per
//!                                                         presence window: who arrived and who
//!                                                         went since the previous diff (a room
//!                                                         frame: kept in R's history; with
//!                                                         --redis each node sends it to its own
//!                                                         members, without epoch/offset)
//! {"type":"presence_state","room":R,"members":[K..]}      who is in R: to a joiner, in the first
//!                                                         window after its join; to a client
//!                                                         that asked (action "presence"); and
//!                                                         to every room if events were lost
//! {"type":"error","error":"..."}                          to the offending client only
//! {"type":"online","users":[U...],"connections":N}        to the asking client only: online
//!                                                         users and connections, cluster-wide
//!                                                         with --redis
//! ```
//!
//! A presence key `K` is the connection's user id, or its socket id for an anonymous
//! connection. A user's second device joining a room is no change; a disconnect shows as a
//! leave of every room the connection was in. Changes undone within one window (join then
//! leave) cancel out. A client's member list is its latest `presence_state` with every later
//! diff applied as set operations (a joiner may get the diff of its own window just before
//! its state: the state already includes it).
//!
//! A storm of N joins into one room costs each member one state and about one diff per
//! window — not one announcement per later join: `tests/chat_protocol.rs` runs 2,000 real
//! clients, `examples/presence_storm.rs` 10,000.
//!
//! History: every room keeps its last 1,000 messages for 5 minutes (`--history N` sets the
//! count, `--history 0` turns it off). A client remembers the `epoch` and `offset` of the last
//! message it saw and rejoins with them as `since` after a reconnect: it receives exactly the
//! frames it missed (messages and presence diffs), in order, then the live stream.
//! A rejoiner gets a fresh `presence_state` in the next window like any joiner. With
//! `--redis` the positions are Redis's, the same on every node: a client may rejoin on any
//! node (a Redis restart changes the epoch: "recovered":false); presence diffs are then not
//! history frames (every node derives them from the cluster-wide presence events and sends
//! them to its own members: one copy per member), and the rejoiner's `presence_state` is what
//! brings its view up to date.
//!
//! Joining a room you are in does nothing. Leaving or messaging a room you are not in, bad
//! JSON, an unknown action, a missing or mistyped field, and binary frames each get an error
//! frame; the connection stays open. Ctrl-C shuts the server down gracefully (close 1001 to
//! every client). Set `RUST_LOG=debug` to see connections open and close.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nucleus_stream::server::{
    Admission, RateLimit, Rejection, Server, ServerConfig, ServerHandle, UpgradeRequest,
};
use nucleus_stream::{
    Disconnect, HistoryConfig, HubConfig, PresenceDiff, PresenceKey, PresenceRecvError,
    SocketMessage, StreamHandler, StreamHub, StreamPosition, WebSocket, async_trait,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What a client asks for.
enum Action<'a> {
    Join {
        room: Cow<'a, str>,
        since: Option<Since>,
    },
    Leave {
        room: Cow<'a, str>,
    },
    Message {
        room: Cow<'a, str>,
        text: Cow<'a, str>,
    },
    Online,
    Presence {
        room: Cow<'a, str>,
    },
}

/// A request as it arrives: one flat object whose strings are borrowed from the frame (a
/// string with escapes is the exception). Parsed into an internally tagged enum instead,
/// serde buffered every request and copied its strings: 4 of the ~9 allocations per
/// published message in 200 rooms x 11 (counted with a `perf probe` on `malloc`).
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    room: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    since: Option<Since>,
}

/// An optional string, borrowed from the input where it has no escapes (serde borrows a
/// `Cow` only when it is not wrapped in an `Option`: hence the newtype).
fn borrowed<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(d)?.map(|b| b.0))
}

impl<'a> Request<'a> {
    /// The action this request asks for, or the error text for the client.
    fn action(self) -> Result<Action<'a>, String> {
        let room = |room: Option<Cow<'a, str>>| {
            room.ok_or_else(|| "invalid request: missing field `room`".to_string())
        };
        Ok(match &*self.action {
            "join" => Action::Join {
                room: room(self.room)?,
                since: self.since,
            },
            "leave" => Action::Leave {
                room: room(self.room)?,
            },
            "message" => Action::Message {
                room: room(self.room)?,
                text: self
                    .text
                    .ok_or_else(|| "invalid request: missing field `text`".to_string())?,
            },
            "online" => Action::Online,
            "presence" => Action::Presence {
                room: room(self.room)?,
            },
            other => return Err(format!("invalid request: unknown action {other:?}")),
        })
    }
}

/// A position in a room's history, as a client sends it back.
#[derive(Deserialize, Clone, Copy)]
struct Since {
    epoch: u64,
    offset: u64,
}

/// A room frame's position in the room's history (`"epoch"` and `"offset"` fields; absent in
/// a room without history).
#[derive(Serialize, Clone, Copy)]
pub struct At {
    epoch: u64,
    offset: u64,
}

impl At {
    fn of(pos: StreamPosition) -> Option<Self> {
        (pos.epoch != 0).then_some(Self {
            epoch: pos.epoch,
            offset: pos.offset,
        })
    }
}

/// Publishes the frame `event` makes from its position to every member of `room`.
async fn publish<'a>(hub: &StreamHub, room: &str, event: impl FnOnce(Option<At>) -> ChatEvent<'a>) {
    hub.publish_to_room(room, None, |pos| event(At::of(pos)).to_message())
        .await
        .ok();
}

/// Sends a presence frame to the members of `room`. On one node it is a room frame like any
/// other (in the history, with its position). With a cluster every node sees the same
/// cluster-wide presence events and announces them itself, so each node sends the frame to
/// its own members only, outside the history (one copy per member, not one per node); a
/// client that recovers gets a fresh `presence_state` instead.
async fn announce_presence<'a>(
    hub: &StreamHub,
    room: &str,
    event: impl FnOnce(Option<At>) -> ChatEvent<'a>,
) {
    if hub.cluster_link().is_some() {
        hub.broadcast_to_local_members(room, event(None).to_message())
            .await
            .ok();
    } else {
        publish(hub, room, event).await;
    }
}

/// What the server sends.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent<'a> {
    Message {
        room: &'a str,
        from: &'a str,
        text: &'a str,
        #[serde(flatten)]
        at: Option<At>,
    },
    Recovery {
        room: &'a str,
        recovered: bool,
        replayed: u64,
        epoch: u64,
        offset: u64,
    },
    Joined {
        room: &'a str,
        socket: &'a str,
        #[serde(flatten)]
        at: Option<At>,
    },
    Left {
        room: &'a str,
        socket: &'a str,
    },
    PresenceDiff {
        room: &'a str,
        joins: Vec<&'a str>,
        leaves: Vec<&'a str>,
        #[serde(flatten)]
        at: Option<At>,
    },
    PresenceState {
        room: &'a str,
        members: Vec<&'a str>,
        /// Only on a state sent to the whole room (a resync): then it is a room frame.
        #[serde(flatten)]
        at: Option<At>,
    },
    Error {
        error: &'a str,
    },
    Online {
        users: &'a [String],
        connections: usize,
    },
}

impl ChatEvent<'_> {
    /// The event as a text frame, serialized once and shared by every recipient.
    pub fn to_message(&self) -> SocketMessage {
        // Serializing these plain string fields cannot fail; fall back to an error frame
        // rather than panicking if it ever did.
        SocketMessage::json(self)
            .unwrap_or_else(|_| SocketMessage::text(r#"{"type":"error","error":"internal"}"#))
    }
}

/// The chat room's handler. It keeps no membership of its own: rooms, members and presence
/// live in the hub, arrivals and departures reach the rooms as presence diffs (see
/// [`spawn_presence`]), and the disconnect context says where a client was.
pub struct ChatHandler {
    presence: Arc<PresenceFeed>,
}

impl ChatHandler {
    /// A handler whose joiners get their room's state from `presence`'s broadcaster.
    pub fn new(presence: Arc<PresenceFeed>) -> Self {
        Self { presence }
    }
}

/// Joins waiting for their room's `presence_state` (sent in the next window, from the
/// broadcaster's view, so that it lines up exactly with the diffs the joiner gets next).
#[derive(Default)]
pub struct PresenceFeed {
    joiners: Mutex<Vec<(String, Arc<str>)>>,
    wake: Notify,
}

impl PresenceFeed {
    fn joined(&self, room: &str, socket: &Arc<str>) {
        let mut joiners = self.joiners.lock().unwrap_or_else(|p| p.into_inner());
        joiners.push((room.to_string(), Arc::clone(socket)));
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<(String, Arc<str>)> {
        std::mem::take(&mut *self.joiners.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A run of one client's messages to one room, not yet published: the room and the texts.
type Run<'a> = Option<(Cow<'a, str>, Vec<Cow<'a, str>>)>;

impl ChatHandler {
    /// Carries out a client's requests (one, or those of one read) in order. Consecutive
    /// messages to one room are collected into a run that goes out as one burst
    /// (`publish_many_to_room`: each member's queue takes the run at once); any other
    /// request, and any error, first sends the run before it, so the order holds.
    async fn handle(&self, hub: &StreamHub, socket: &WebSocket, msgs: &[SocketMessage]) {
        let me = socket.id();
        let mut run: Run<'_> = None;
        for msg in msgs {
            let result = match msg.as_text() {
                Some(text) => match parse(text) {
                    Ok(action) => self.act(hub, socket, action, &mut run).await,
                    Err(error) => Err(error),
                },
                None => Err(BINARY_REFUSED.to_string()),
            };
            if let Err(error) = result {
                publish_run(hub, me, run.take()).await;
                let event = ChatEvent::Error { error: &error };
                // If even this fails the client is going away; nothing else to do.
                hub.send_to(me, event.to_message()).await.ok();
            }
        }
        publish_run(hub, me, run).await;
    }

    /// Carries out one parsed request: a message joins `run` (it goes out with the messages
    /// to the same room that follow it); anything else sends `run` first. `Err` is the error
    /// text for that client.
    async fn act<'a>(
        &self,
        hub: &StreamHub,
        socket: &WebSocket,
        action: Action<'a>,
        run: &mut Run<'a>,
    ) -> Result<(), String> {
        if !matches!(action, Action::Message { .. }) {
            publish_run(hub, socket.id(), run.take()).await;
        }
        let me = socket.id();
        match action {
            Action::Join { room, since } => {
                let since = since.map(|s| StreamPosition::new(s.epoch, s.offset));
                let recovery = hub
                    .join_room_since(me, &room, since)
                    .await
                    .map_err(|e| format!("cannot join: {e}"))?;
                if since.is_some() {
                    let event = ChatEvent::Recovery {
                        room: &room,
                        recovered: recovery.recovered,
                        replayed: recovery.replayed,
                        epoch: recovery.position.epoch,
                        offset: recovery.position.offset,
                    };
                    // The replayed frames are already queued ahead of this one.
                    hub.send_to(me, event.to_message()).await.ok();
                }
                let (joined_now, position) = (recovery.joined, recovery.position);
                if joined_now {
                    let event = ChatEvent::Joined {
                        room: &room,
                        socket: me,
                        at: At::of(position),
                    };
                    hub.send_to(me, event.to_message()).await.ok();
                    self.presence.joined(&room, &socket.id);
                }
            }
            Action::Leave { room } => {
                let was_member = hub
                    .leave_room(me, &room)
                    .await
                    .map_err(|e| format!("cannot leave: {e}"))?;
                if !was_member {
                    return Err(format!("not in room {room:?}"));
                }
                let event = ChatEvent::Left {
                    room: &room,
                    socket: me,
                };
                hub.send_to(me, event.to_message()).await.ok();
            }
            Action::Message { room, text } => {
                if !hub.is_in_room(me, &room).await {
                    return Err(format!("not in room {room:?}: join it first"));
                }
                match run {
                    Some((to, texts)) if *to == room => texts.push(text),
                    _ => {
                        publish_run(hub, me, run.take()).await;
                        *run = Some((room, vec![text]));
                    }
                }
            }
            Action::Online => {
                let mut users = hub.online_users().await;
                users.sort();
                let event = ChatEvent::Online {
                    users: &users,
                    connections: hub.connection_count().await,
                };
                hub.send_to(me, event.to_message()).await.ok();
            }
            Action::Presence { room } => {
                let members = hub.room_presence(&room).await;
                let event = ChatEvent::PresenceState {
                    room: &room,
                    members: members.iter().map(PresenceKey::as_str).collect(),
                    at: None,
                };
                hub.send_to(me, event.to_message()).await.ok();
            }
        }
        Ok(())
    }
}

/// A request, or the error text for the client.
fn parse(text: &str) -> Result<Action<'_>, String> {
    serde_json::from_str::<Request>(text)
        .map_err(|e| format!("invalid request: {e}"))?
        .action()
}

/// The error text for a binary frame.
const BINARY_REFUSED: &str = "binary frames are not supported: send JSON text";

/// Publishes a run of one client's messages to one room, in order, as one burst. Each frame
/// is built once its position is assigned, so it can carry it.
async fn publish_run(hub: &StreamHub, me: &str, run: Run<'_>) {
    let Some((room, texts)) = run else { return };
    hub.publish_many_to_room(&room, None, texts.iter(), |text, pos| {
        ChatEvent::Message {
            room: &room,
            from: me,
            text,
            at: At::of(pos),
        }
        .to_message()
    })
    .await
    .ok();
}

#[async_trait]
impl StreamHandler for ChatHandler {
    async fn on_messages(&self, hub: &StreamHub, socket: &WebSocket, msgs: Vec<SocketMessage>) {
        self.handle(hub, socket, &msgs).await;
    }

    async fn on_message(&self, hub: &StreamHub, socket: &WebSocket, msg: SocketMessage) {
        self.handle(hub, socket, std::slice::from_ref(&msg)).await;
    }

    async fn on_disconnect_with(&self, _hub: &StreamHub, gone: &Disconnect) {
        // The rooms hear of it through the presence diff; here we only log why.
        tracing::debug!(
            socket = %gone.socket.id,
            user = gone.socket.user_id(),
            rooms = gone.rooms.len(),
            reason = %gone.reason,
            "left"
        );
    }
}

/// Runs the presence broadcaster. It sleeps until a presence event (or a join waiting for
/// its state) arrives, lets one `window` pass (more while the server is behind on writes:
/// see [`wait_for_writes`]), and then takes everything that came: each room
/// with a net change gets one `presence_diff`, and each joiner of the window one
/// `presence_state` of its room. Its view of each room is built from the events alone, so a
/// state and the diffs after it never overlap or leave a gap. If events were lost (the
/// subscription lagged), it rebuilds its view from the hub and sends every room a
/// `presence_state`.
pub fn spawn_presence(hub: &StreamHub, window: Duration) -> (Arc<PresenceFeed>, JoinHandle<()>) {
    let hub = hub.clone();
    let feed = Arc::new(PresenceFeed::default());
    let mut events = hub.subscribe_presence();
    let task_feed = Arc::clone(&feed);
    let task = tokio::spawn(async move {
        let feed = task_feed;
        let mut view: BTreeMap<Arc<str>, BTreeSet<PresenceKey>> = BTreeMap::new();
        loop {
            let mut diff = PresenceDiff::new();
            let mut lagged = false;
            tokio::select! {
                first = events.recv() => match first {
                    Ok(event) => diff.push(&event),
                    Err(PresenceRecvError::Lagged(_)) => lagged = true,
                    Err(_) => return,
                },
                _ = feed.wake.notified() => {}
            }
            tokio::time::sleep(window).await;
            wait_for_writes(&hub, window).await;
            let open = events.drain_into(&mut diff).is_some();
            let joiners = feed.take();
            if lagged || diff.missed() > 0 {
                tracing::warn!("presence events lost: resyncing every room");
                resync(&hub, &mut view).await;
            } else {
                announce(&hub, &diff, &mut view).await;
                send_states(&hub, &view, joiners).await;
            }
            if !open {
                return;
            }
        }
    });
    (feed, task)
}

/// A member's queue holding more than this means the server is behind on writes.
const BACKLOG: usize = 16 * 1024;

/// While some member still has more than [`BACKLOG`] bytes queued (the previous diffs and
/// states are not written yet), waits — a window at a time, at most ten — so that the next
/// diff grows instead of adding a frame the member cannot take yet. In a join storm larger
/// than the server can write in real time this is what bounds the frames per member: the
/// windows stretch to the server's write speed.
async fn wait_for_writes(hub: &StreamHub, window: Duration) {
    for _ in 0..10 {
        match hub.deepest_queues(1).await.first() {
            Some(deepest) if deepest.queued_bytes > BACKLOG => tokio::time::sleep(window).await,
            _ => return,
        }
    }
}

/// The demo auth hook: `?user=NAME` names the connection's user; no `user` is anonymous.
pub fn user_from_query(req: &UpgradeRequest<'_>) -> Result<Admission, Rejection> {
    match req.query_param("user") {
        None => Ok(Admission::anonymous()),
        Some(name)
            if (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Ok(Admission::user(name))
        }
        Some(_) => Err(Rejection::new(400).with_body("user: 1-64 of A-Z a-z 0-9 _ -")),
    }
}

#[cfg(feature = "redis")]
type Cluster = nucleus_stream::cluster::RedisCluster;
#[cfg(not(feature = "redis"))]
type Cluster = ();

#[cfg(feature = "redis")]
fn join_cluster(hub: &StreamHub, url: &str) -> std::io::Result<Cluster> {
    use nucleus_stream::cluster::{ClusterConfig, RedisCluster};
    let cluster = RedisCluster::start(hub, ClusterConfig::new(url))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    println!("cluster node {} via {url}", cluster.node_id());
    Ok(cluster)
}

#[cfg(not(feature = "redis"))]
fn join_cluster(_hub: &StreamHub, _url: &str) -> std::io::Result<Cluster> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "--redis needs the redis feature: cargo run --features redis --example chat",
    ))
}

async fn leave_cluster(cluster: Option<Cluster>) {
    #[cfg(feature = "redis")]
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    #[cfg(not(feature = "redis"))]
    let _ = cluster;
}

/// Sends each room's diff to its members and applies it to `view`.
async fn announce(
    hub: &StreamHub,
    diff: &PresenceDiff,
    view: &mut BTreeMap<Arc<str>, BTreeSet<PresenceKey>>,
) {
    for (room, changes) in diff.rooms() {
        announce_presence(hub, room, |at| ChatEvent::PresenceDiff {
            room,
            joins: changes.joins().map(PresenceKey::as_str).collect(),
            leaves: changes.leaves().map(PresenceKey::as_str).collect(),
            at,
        })
        .await;
        let members = view.entry(Arc::from(room)).or_default();
        for key in changes.leaves() {
            members.remove(key);
        }
        members.extend(changes.joins().cloned());
        if members.is_empty() {
            view.remove(room);
        }
    }
}

/// Sends each joiner still in its room that room's state (one frame per room, shared).
async fn send_states(
    hub: &StreamHub,
    view: &BTreeMap<Arc<str>, BTreeSet<PresenceKey>>,
    joiners: Vec<(String, Arc<str>)>,
) {
    let mut frames: BTreeMap<String, SocketMessage> = BTreeMap::new();
    for (room, socket) in joiners {
        if !hub.is_in_room(&socket, &room).await {
            continue;
        }
        let frame = frames.entry(room.clone()).or_insert_with(|| {
            let members = view.get(room.as_str());
            ChatEvent::PresenceState {
                room: &room,
                members: members
                    .into_iter()
                    .flatten()
                    .map(PresenceKey::as_str)
                    .collect(),
                at: None,
            }
            .to_message()
        });
        hub.send_to(&socket, frame.clone()).await.ok();
    }
}

/// Rebuilds `view` from the hub and sends every room its state.
async fn resync(hub: &StreamHub, view: &mut BTreeMap<Arc<str>, BTreeSet<PresenceKey>>) {
    view.clear();
    for room in hub.list_rooms().await {
        let members = hub.room_presence(&room).await;
        announce_presence(hub, &room, |at| ChatEvent::PresenceState {
            room: &room,
            members: members.iter().map(PresenceKey::as_str).collect(),
            at,
        })
        .await;
        view.insert(Arc::from(room.as_str()), members.into_iter().collect());
    }
}

/// Serves `GET /metrics` (any path, in fact) as Prometheus text: the hub's figures recorded
/// through the `metrics` facade right before each render.
pub async fn serve_metrics(
    listener: TcpListener,
    hub: StreamHub,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let hub = hub.clone();
        let prometheus = prometheus.clone();
        tokio::spawn(async move {
            // Read the request head (bounded); its content does not matter.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            hub.record_metrics();
            let body = prometheus.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// The command line.
#[derive(Debug)]
pub struct Options {
    pub addr: String,
    pub metrics: Option<String>,
    pub presence_window: Duration,
    pub inbound_rate: Option<RateLimit>,
    /// `--redis URL`: join the cluster through this Redis (needs the `redis` feature).
    pub redis: Option<String>,
    /// `--history N`: messages kept per room (0: no history).
    pub history: usize,
}

impl Options {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut options = Options {
            addr: "127.0.0.1:9001".to_string(),
            metrics: None,
            presence_window: Duration::from_millis(200),
            inbound_rate: Some(RateLimit::default()),
            redis: None,
            history: 1_000,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--metrics" => options.metrics = Some(value("--metrics")?),
                "--redis" => options.redis = Some(value("--redis")?),
                "--presence-window" => {
                    let ms = value("--presence-window")?;
                    let ms: u64 = ms.parse().map_err(|_| format!("bad window {ms:?}"))?;
                    options.presence_window = Duration::from_millis(ms);
                }
                "--inbound-rate" => {
                    let spec = value("--inbound-rate")?;
                    options.inbound_rate = parse_rate(&spec)?;
                }
                "--history" => {
                    let n = value("--history")?;
                    options.history = n.parse().map_err(|_| format!("bad history {n:?}"))?;
                }
                other if other.starts_with("--") => return Err(format!("unknown option {other}")),
                addr => options.addr = addr.to_string(),
            }
        }
        Ok(options)
    }

    /// The hub configuration these options ask for (the history of every room).
    pub fn hub_config(&self) -> HubConfig {
        HubConfig::default().history(chat_history(self.history))
    }

    /// The server configuration these options ask for.
    pub fn config(&self) -> ServerConfig {
        let mut config = ServerConfig::default()
            .max_connections(100_000)
            .inbound_rate(self.inbound_rate.clone())
            .auth(user_from_query);
        // Measurement knobs of the wire path (benches/compare_uws.sh, BENCHMARKS.md): e.g.
        // NUCLEUS_WRITE_LATE=0, NUCLEUS_COALESCE_BELOW=0 (every payload by reference).
        if let Ok(v) = std::env::var("NUCLEUS_WRITE_LATE") {
            config = config.write_late(v != "0");
        }
        // NUCLEUS_SNDBUF=bytes caps each connection's SO_SNDBUF (0: the kernel's autotuning).
        if let Some(n) = std::env::var("NUCLEUS_SNDBUF")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            config = config.send_buffer_size((n > 0).then_some(n));
        }
        // NUCLEUS_UNSENT_LIMIT=bytes sets each connection's TCP_NOTSENT_LOWAT (0: the system's).
        if let Some(n) = std::env::var("NUCLEUS_UNSENT_LIMIT")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            config = config.unsent_limit((n > 0).then_some(n));
        }
        if let Some(n) = std::env::var("NUCLEUS_COALESCE_BELOW")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config = config.coalesce_below(n);
        }
        if let Some(n) = std::env::var("NUCLEUS_READ_BUFFER")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config = config.read_buffer_size(n);
        }
        config
    }
}

/// `off`, `N` or `N:BURST`.
fn parse_rate(spec: &str) -> Result<Option<RateLimit>, String> {
    if spec == "off" {
        return Ok(None);
    }
    let bad = || format!("bad rate {spec:?}: want N, N:BURST or off");
    let (rate, burst) = match spec.split_once(':') {
        Some((r, b)) => (r, Some(b)),
        None => (spec, None),
    };
    let mut limit = RateLimit::per_second(rate.parse().map_err(|_| bad())?);
    if let Some(burst) = burst {
        limit = limit.burst(burst.parse().map_err(|_| bad())?);
    }
    Ok(Some(limit))
}

/// Starts the chat server (and its presence broadcaster) as the options say; the metrics
/// endpoint and the cluster (`--redis`) are started by `main`, which owns the process-wide
/// recorder and the cluster's shutdown.
pub async fn start(hub: &StreamHub, options: &Options) -> std::io::Result<ServerHandle> {
    let (feed, _task) = spawn_presence(hub, options.presence_window);
    Server::new(hub.clone(), ChatHandler::new(feed))
        .config(options.config())
        .bind(&options.addr)
        .await
}

/// The chat's history: every room, `messages` messages (0: none), 5 minutes. With `--redis`
/// the offsets are assigned in Redis, after `publish` built the frame (without a position):
/// [`stamp_position`] then adds them on every node.
pub fn chat_history(messages: usize) -> HistoryConfig {
    let config = HistoryConfig::default()
        .max_messages(messages)
        .stamp(stamp_position);
    if messages == 0 {
        config
    } else {
        config.prefix("")
    }
}

/// Adds `"epoch":E,"offset":O` to a JSON object frame that has no position yet (the same
/// fields, in the same place, as [`At`] in a frame built with its position).
pub fn stamp_position(pos: StreamPosition, msg: &SocketMessage) -> SocketMessage {
    match msg.as_text().and_then(|t| t.strip_suffix('}')) {
        Some(head) if !head.contains(r#""offset":"#) => {
            let sep = if head.ends_with('{') { "" } else { "," };
            SocketMessage::text(format!(
                r#"{head}{sep}"epoch":{},"offset":{}}}"#,
                pos.epoch, pos.offset
            ))
        }
        _ => msg.clone(),
    }
}

fn main() -> std::io::Result<()> {
    let mut builder = match std::env::var("NUCLEUS_RUNTIME").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = std::env::var("NUCLEUS_EVENT_INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder.event_interval(n);
    }
    builder.enable_all().build()?.block_on(serve())
}

async fn serve() -> std::io::Result<()> {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("chat: {e}");
            std::process::exit(2);
        }
    };
    let hub = StreamHub::with_config(options.hub_config());
    let cluster = match &options.redis {
        Some(url) => Some(join_cluster(&hub, url)?),
        None => None,
    };
    let server = start(&hub, &options).await?;
    println!("chat listening on ws://{}", server.local_addr());
    if let Some(addr) = &options.metrics {
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(addr).await?;
        println!("metrics at http://{}/metrics", listener.local_addr()?);
        tokio::spawn(serve_metrics(listener, hub.clone(), prometheus));
    }
    println!(
        "try: cargo run --example chat_client -- ws://{}",
        server.local_addr()
    );

    tokio::signal::ctrl_c().await?;
    let hub = server.hub().clone();
    println!(
        "shutting down ({} connections; hub: {} sockets, {} rooms)",
        server.connections(),
        hub.connection_count().await,
        hub.list_rooms().await.len()
    );
    leave_cluster(cluster).await;
    server.shutdown_and_wait().await;
    Ok(())
}
