//! Socket ids: unique per hub, and across a cluster when they carry their node.
//!
//! An id made by [`SocketIdGenerator`] is `"<prefix>.<n>"` (`n` in hex). In a cluster the
//! prefix is the node id, so [`node_of`] tells which node holds a socket and
//! [`StreamHub::send_to`](crate::StreamHub::send_to) routes to it without a lookup. Any
//! transport can use it (the bundled server does through
//! [`StreamHub::next_socket_id`](crate::StreamHub::next_socket_id)).

use std::sync::Arc as StrArc;

use crate::sync::{AtomicU64, Ordering};

/// Makes ids `"<prefix>.<n>"`, `n` counting up from 1.
///
/// # Examples
///
/// ```
/// use nucleus_stream::socket_id::{SocketIdGenerator, node_of};
/// let ids = SocketIdGenerator::new("node-a");
/// let id = ids.next_id();
/// assert_eq!(&*id, "node-a.1");
/// assert_eq!(node_of(&id), Some("node-a"));
/// ```
#[derive(Debug)]
pub struct SocketIdGenerator {
    prefix: StrArc<str>,
    /// The last number handed out. Only uniqueness matters, so any ordering works.
    next: AtomicU64,
}

impl SocketIdGenerator {
    /// A generator of `"<prefix>.<n>"` ids.
    pub fn new(prefix: impl Into<StrArc<str>>) -> Self {
        Self {
            prefix: prefix.into(),
            next: AtomicU64::new(0),
        }
    }

    /// The next id.
    pub fn next_id(&self) -> StrArc<str> {
        // ORDERING: uniqueness comes from the RMW itself; nothing else is published with it.
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        StrArc::from(format!("{}.{n:x}", self.prefix))
    }

    /// The prefix (the node id in a cluster).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The node part of an id made by [`SocketIdGenerator`]: everything before the last `.`.
///
/// # Examples
///
/// ```
/// assert_eq!(nucleus_stream::socket_id::node_of("n1.2a"), Some("n1"));
/// assert_eq!(nucleus_stream::socket_id::node_of("conn-1"), None);
/// ```
pub fn node_of(socket_id: &str) -> Option<&str> {
    socket_id
        .rsplit_once('.')
        .map(|(node, _)| node)
        .filter(|node| !node.is_empty())
}
