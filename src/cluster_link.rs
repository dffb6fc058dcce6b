//! The hook through which a hub reaches other nodes (the core side of clustering).
//!
//! The core has no I/O. A hub with a [`ClusterLink`] attached (see
//! [`StreamHub::attach_cluster`](crate::StreamHub::attach_cluster)) calls it, synchronously
//! and without waiting, at the points where local state or delivery ends and other nodes
//! begin: after a room broadcast was delivered locally, when a room's local membership or a
//! user's local devices change, and for a `send_to` / `send_to_user` / `broadcast_all` whose
//! targets may live elsewhere. It also asks the link about the other nodes' presence, so that
//! presence queries answer for the whole cluster.
//!
//! The `redis` feature's `cluster` module implements it over Redis pub/sub;
//! another broker could implement it the same way. Every method must return promptly (hand
//! work to a background task; never block on the network): the hub calls them on its message
//! paths.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::error::StreamError;
use crate::message::SocketMessage;

/// What [`ClusterLink::history_range`] returns: a boxed future (the trait stays object-safe).
pub type HistoryFuture<'a> =
    Pin<Box<dyn Future<Output = Result<HistoryRange, StreamError>> + Send + 'a>>;

/// A stretch of a room's shared history, read from the cluster's store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryRange {
    /// The log's epoch now (0: the room has no log in the store).
    pub epoch: u64,
    /// The last offset assigned in that epoch.
    pub top: u64,
    /// Messages after the requested offset, in offset order (the store may have dropped the
    /// oldest: then the first offset is not the one asked for).
    pub entries: Vec<HistoryEntry>,
}

impl HistoryRange {
    /// A range of `entries` in `epoch`, whose last assigned offset is `top`.
    pub fn new(epoch: u64, top: u64, entries: Vec<HistoryEntry>) -> Self {
        Self {
            epoch,
            top,
            entries,
        }
    }
}

/// One message of a [`HistoryRange`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// Its offset.
    pub offset: u64,
    /// How long ago it was published (by the store's clock).
    pub age: Duration,
    /// The message as published (not stamped).
    pub msg: SocketMessage,
    /// The socket the broadcast excluded.
    pub except: Option<String>,
}

impl HistoryEntry {
    /// The message `msg` at `offset`, published `age` ago, excluding `except`.
    pub fn new(offset: u64, age: Duration, msg: SocketMessage, except: Option<String>) -> Self {
        Self {
            offset,
            age,
            msg,
            except,
        }
    }
}

/// The socket a room broadcast excludes, as the origin node saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Except<'a> {
    /// The excluded socket's id.
    pub socket_id: &'a str,
    /// Whether that socket is registered on the origin node (then no other node needs to
    /// exclude anything).
    pub local: bool,
}

impl<'a> Except<'a> {
    /// An exclusion of `socket_id`, registered (`local`) on the origin node or not.
    pub fn new(socket_id: &'a str, local: bool) -> Self {
        Self { socket_id, local }
    }
}

/// A hub's connection to the other nodes of a cluster.
///
/// Implementations hand work to a background task and return at once; delivery to other
/// nodes is at most once.
pub trait ClusterLink: Send + Sync + 'static {
    /// This node's id (no `.` in it: socket ids are `"<node>.<n>"`).
    fn node_id(&self) -> &str;

    /// A room broadcast was delivered to the local members; carry it to the other nodes'
    /// members (except `except`, where it lives).
    fn room_broadcast(&self, room: &str, msg: &SocketMessage, except: Option<Except<'_>>);

    /// A broadcast to several rooms was delivered to the local members (each once); carry it
    /// to the other nodes so that each of their members of any of the rooms gets it once.
    ///
    /// The default forwards each room separately with
    /// [`room_broadcast`](Self::room_broadcast) — a remote member of two of the rooms then
    /// gets it twice; a link that can do better overrides it.
    fn rooms_broadcast(&self, rooms: &[&str], msg: &SocketMessage, except: Option<Except<'_>>) {
        for room in rooms {
            self.room_broadcast(room, msg, except);
        }
    }

    /// The local membership of `room` changed (a join or a leave; the room may now be empty
    /// or new). The link reads the current state from the hub when it acts on this.
    fn room_changed(&self, room: &str);

    /// The local devices of `user` changed (a socket of the user registered or left).
    fn user_changed(&self, user: &str);

    /// The number of local sockets changed.
    fn connections_changed(&self);

    /// Sends to a socket that is not registered here.
    ///
    /// # Errors
    ///
    /// [`StreamError::SocketNotFound`] if no other node is known to hold it (its id names no
    /// live node); [`StreamError::SendFailed`] if the message could not be handed to the
    /// cluster (backlog full or broker unreachable).
    fn send_to_remote(&self, socket_id: &str, msg: &SocketMessage) -> Result<(), StreamError>;

    /// Sends to the devices `user` has on other nodes; returns how many nodes it was sent to.
    fn send_to_user_remote(&self, user: &str, msg: &SocketMessage) -> usize;

    /// Sends to every socket on every other node.
    fn broadcast_all_remote(&self, msg: &SocketMessage);

    /// Whether `user` has a device on another node.
    fn remote_user_online(&self, user: &str) -> bool;

    /// Users with a device on another node (each once, in no particular order).
    fn remote_users(&self) -> Vec<String>;

    /// Sockets registered on the other nodes.
    fn remote_connections(&self) -> usize;

    /// Rooms with members on other nodes and their member counts there.
    fn remote_rooms(&self) -> Vec<(String, usize)>;

    /// Members `room` has on other nodes.
    fn remote_room_size(&self, room: &str) -> usize;

    /// Whether this link keeps rooms' history itself (issue 13: offsets assigned by the
    /// shared store, so they mean the same on every node). If it does, the hub hands every
    /// message of a room with history to [`history_publish`](Self::history_publish) instead
    /// of delivering it, and the link delivers it back through the hub — to this node's
    /// members too — once its position is known. Default: `false` (positions are then per
    /// node).
    fn keeps_history(&self) -> bool {
        false
    }

    /// Publishes a message of a room with history (see
    /// [`keeps_history`](Self::keeps_history)); the store assigns its offset. Returns at once.
    ///
    /// # Errors
    ///
    /// [`StreamError::SendFailed`] (with the room's name) if it could not be handed on
    /// (store unreachable, backlog full): the hub then delivers it to this node's members
    /// only, without a position.
    fn history_publish(
        &self,
        room: &str,
        msg: &SocketMessage,
        except: Option<Except<'_>>,
    ) -> Result<(), StreamError> {
        let _ = (msg, except);
        Err(StreamError::SendFailed(room.to_string()))
    }

    /// Keeps this node listening to `room`'s messages while `hold` is on (even without local
    /// members), so a joiner can read the store and then continue live without a gap.
    fn history_hold(&self, room: &str, hold: bool) {
        let _ = (room, hold);
    }

    /// Waits until this node listens to `room` (see [`history_hold`](Self::history_hold)),
    /// then reads its history after `after` (at most `limit` messages).
    fn history_range<'a>(&'a self, room: &'a str, after: u64, limit: usize) -> HistoryFuture<'a> {
        let _ = (after, limit);
        Box::pin(async move { Err(StreamError::SendFailed(room.to_string())) })
    }
}
