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

use crate::error::StreamError;
use crate::message::SocketMessage;

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
}
