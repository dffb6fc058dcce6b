//! The guide's chat room, done right: rooms, announcements, and an error frame — never a
//! panic — for anything malformed.
//!
//! ```text
//! cargo run --release --example chat [ADDR]          # default 127.0.0.1:9001
//! cargo run --release --example chat_client [URL]    # in two other terminals
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
//!                                                         to R, after the join (joiner included)
//! {"type":"left","room":R,"socket":SOCKET_ID,"epoch":E,"offset":O}
//!                                                         to R, before the leave (leaver included);
//!                                                         on disconnect, to each room it was in
//! {"type":"error","error":"..."}                          to the offending client only
//! {"type":"online","users":[U...],"connections":N}        to the asking client only: online
//!                                                         users and connections, cluster-wide
//!                                                         with --redis
//! ```
//!
//! History: every room keeps its last 1,000 messages for 5 minutes (`--history N` sets the
//! count, `--history 0` turns it off). A client remembers the `epoch` and `offset` of the last
//! message it saw and rejoins with them as `since` after a reconnect: it receives exactly the
//! frames it missed (messages and announcements), in order, then the live stream.
//!
//! Joining a room you are in does nothing. Leaving or messaging a room you are not in, bad
//! JSON, an unknown action, a missing or mistyped field, and binary frames each get an error
//! frame; the connection stays open. Ctrl-C shuts the server down gracefully (close 1001 to
//! every client). Set `RUST_LOG=debug` to see connections open and close.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use nucleus_stream::server::{Admission, Rejection, Server, ServerConfig, UpgradeRequest};
use nucleus_stream::{
    HistoryConfig, HubConfig, SocketMessage, StreamHandler, StreamHub, StreamPosition, WebSocket,
    async_trait,
};
use serde::{Deserialize, Serialize};

/// What a client asks for.
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Action {
    Join { room: String, since: Option<Since> },
    Leave { room: String },
    Message { room: String, text: String },
    Online,
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

/// What the server sends.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
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

/// The chat room's handler.
///
/// It remembers which rooms each connection joined, so that a disconnect can be announced as
/// a `left` in each of them (the hub has already removed the socket from its rooms by the
/// time `on_disconnect` runs). Only joins, leaves and disconnects touch that map; messages
/// never do.
#[derive(Default)]
pub struct ChatHandler {
    rooms: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl ChatHandler {
    /// Carries out one client request; `Err` is the error text for that client.
    async fn handle(&self, hub: &StreamHub, socket: &WebSocket, text: &str) -> Result<(), String> {
        let action: Action =
            serde_json::from_str(text).map_err(|e| format!("invalid request: {e}"))?;
        let me = socket.id();
        match action {
            Action::Join { room, since } => {
                let joined_now = match since {
                    None => hub.join_room(me, &room).await,
                    Some(since) => {
                        let since = StreamPosition::new(since.epoch, since.offset);
                        match hub.join_room_since(me, &room, Some(since)).await {
                            Ok(recovery) => {
                                let event = ChatEvent::Recovery {
                                    room: &room,
                                    recovered: recovery.recovered,
                                    replayed: recovery.replayed,
                                    epoch: recovery.position.epoch,
                                    offset: recovery.position.offset,
                                };
                                // The replayed frames are already queued ahead of this one.
                                hub.send_to(me, event.to_message()).await.ok();
                                Ok(recovery.joined)
                            }
                            Err(e) => Err(e),
                        }
                    }
                }
                .map_err(|e| format!("cannot join: {e}"))?;
                if joined_now {
                    self.remember(me, &room, true);
                    publish(hub, &room, |at| ChatEvent::Joined {
                        room: &room,
                        socket: me,
                        at,
                    })
                    .await;
                }
            }
            Action::Leave { room } => {
                if !hub.is_in_room(me, &room).await {
                    return Err(format!("not in room {room:?}"));
                }
                publish(hub, &room, |at| ChatEvent::Left {
                    room: &room,
                    socket: me,
                    at,
                })
                .await;
                hub.leave_room(me, &room)
                    .await
                    .map_err(|e| format!("cannot leave: {e}"))?;
                self.remember(me, &room, false);
            }
            Action::Message { room, text } => {
                if !hub.is_in_room(me, &room).await {
                    return Err(format!("not in room {room:?}: join it first"));
                }
                // The frame is built once its position is assigned, so it can carry it.
                publish(hub, &room, |at| ChatEvent::Message {
                    room: &room,
                    from: me,
                    text: &text,
                    at,
                })
                .await;
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
        }
        Ok(())
    }
}

impl ChatHandler {
    /// Records that `socket` joined (or left) `room`.
    fn remember(&self, socket: &str, room: &str, joined: bool) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if joined {
            rooms
                .entry(socket.to_string())
                .or_default()
                .insert(room.to_string());
        } else if let Some(set) = rooms.get_mut(socket) {
            set.remove(room);
            if set.is_empty() {
                rooms.remove(socket);
            }
        }
    }
}

#[async_trait]
impl StreamHandler for ChatHandler {
    async fn on_message(&self, hub: &StreamHub, socket: &WebSocket, msg: SocketMessage) {
        let result = match msg.as_text() {
            Some(text) => self.handle(hub, socket, text).await,
            None => Err("binary frames are not supported: send JSON text".to_string()),
        };
        if let Err(error) = result {
            let event = ChatEvent::Error { error: &error };
            // If even this fails the client is going away; nothing else to do.
            hub.send_to(socket.id(), event.to_message()).await.ok();
        }
    }

    async fn on_disconnect(&self, hub: &StreamHub, socket_id: &str) {
        let rooms = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms.remove(socket_id).unwrap_or_default()
        };
        for room in rooms {
            publish(hub, &room, |at| ChatEvent::Left {
                room: &room,
                socket: socket_id,
                at,
            })
            .await;
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

/// The chat's history: every room, `messages` messages (0: none), 5 minutes.
pub fn chat_history(messages: usize) -> HistoryConfig {
    let config = HistoryConfig::default().max_messages(messages);
    if messages == 0 {
        config
    } else {
        config.prefix("")
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut addr = "127.0.0.1:9001".to_string();
    let mut redis_url = None;
    let mut history = 1_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--redis" => redis_url = args.next(),
            "--history" => {
                history = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| std::io::Error::other("--history takes a message count"))?
            }
            _ => addr = arg,
        }
    }
    let hub = StreamHub::with_config(HubConfig::default().history(chat_history(history)));
    let cluster = match redis_url {
        Some(url) => Some(join_cluster(&hub, &url)?),
        None => None,
    };
    let mut config = ServerConfig::default()
        .max_connections(100_000)
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
    if let Some(n) = std::env::var("NUCLEUS_COALESCE_BELOW")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config = config.coalesce_below(n);
    }
    let server = Server::new(hub, ChatHandler::default())
        .config(config)
        .bind(&addr)
        .await?;
    println!("chat listening on ws://{}", server.local_addr());
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
