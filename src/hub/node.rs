//! The hub as one node of a cluster: attaching a [`ClusterLink`], node-aware socket ids, and
//! the local and cluster-wide views of rooms and presence. Without a cluster every
//! cluster-wide form answers for this node alone.

use std::sync::Arc as StrArc;

use super::{ClusterNode, StreamHub};
use crate::cluster_link::ClusterLink;
use crate::error::StreamError;
use crate::presence_events::PresenceKey;
use crate::socket_id::SocketIdGenerator;
use crate::sync::Ordering;

impl StreamHub {
    /// Sockets registered on this node (equal to
    /// [`connection_count`](Self::connection_count) without a cluster).
    pub fn local_connection_count(&self) -> usize {
        // ORDERING: a statistic; exact once concurrent (un)registrations have returned.
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Users with a socket on this node, in no particular order.
    pub fn local_online_users(&self) -> Vec<String> {
        self.inner.presence.online_users()
    }

    /// Sockets of `user_id` registered on this node.
    pub fn local_device_count(&self, user_id: &str) -> usize {
        self.inner
            .presence
            .with_devices(user_id, |d| d.0.len())
            .unwrap_or(0)
    }

    /// Ids of the members `room` has on this node (what `get_room_members` returns).
    pub(crate) fn local_member_ids(&self, room: &str) -> Vec<String> {
        self.inner
            .rooms
            .with(room, |cell| {
                cell.load()
                    .entries()
                    .map(|e| e.socket.id.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Members `room` has on this node.
    pub fn local_room_size(&self, room: &str) -> usize {
        self.inner
            .rooms
            .with(room, |cell| cell.load().len())
            .unwrap_or(0)
    }

    /// Names of the rooms with members on any node (each once). Without a cluster, the same
    /// as [`list_rooms`](Self::list_rooms).
    pub async fn cluster_list_rooms(&self) -> Vec<String> {
        let mut rooms = self.list_rooms().await;
        if let Some(link) = self.link() {
            for (room, _) in link.remote_rooms() {
                if self.local_room_size(&room) == 0 {
                    rooms.push(room);
                }
            }
        }
        rooms
    }

    /// Members `room` has on every node (this node's count plus the last counts the other
    /// nodes announced). Without a cluster, this node's count.
    ///
    /// # Examples
    ///
    /// ```
    /// use nucleus_stream::{channel, QueueConfig, StreamHub, WebSocket};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let hub = StreamHub::new();
    /// let (tx, _rx) = channel(QueueConfig::default());
    /// hub.register(WebSocket::new("s1", tx)).await?;
    /// hub.join_room("s1", "general").await?;
    /// assert_eq!(hub.cluster_room_size("general").await, 1);
    /// assert_eq!(hub.local_room_size("general"), 1);
    /// assert_eq!(hub.cluster_list_rooms().await, ["general"]);
    /// # Ok::<(), nucleus_stream::StreamError>(())
    /// # }).unwrap();
    /// ```
    pub async fn cluster_room_size(&self, room: &str) -> usize {
        self.local_room_size(room) + self.link().map_or(0, |l| l.remote_room_size(room))
    }

    /// Makes this hub a node of a cluster: from now on it calls `link` after local delivery
    /// and on local membership and presence changes (see [`ClusterLink`]), and its presence
    /// queries answer for the cluster. The `redis` feature's
    /// `cluster::RedisCluster::start` calls this for you.
    ///
    /// # Errors
    ///
    /// [`StreamError::ClusterAttached`] if a cluster is already attached; the hub is
    /// unchanged.
    pub fn attach_cluster(&self, link: StrArc<dyn ClusterLink>) -> Result<(), StreamError> {
        let ids = SocketIdGenerator::new(link.node_id());
        self.inner
            .cluster
            .set(ClusterNode { link, ids })
            .map_err(|_| StreamError::ClusterAttached)
    }

    /// The attached cluster link, if any.
    pub fn cluster_link(&self) -> Option<&StrArc<dyn ClusterLink>> {
        self.link()
    }

    #[inline]
    pub(super) fn link(&self) -> Option<&StrArc<dyn ClusterLink>> {
        self.inner.cluster.get().map(|c| &c.link)
    }

    /// A fresh socket id for a transport to register a socket under: `"<node>.<n>"` with a
    /// cluster attached (so that [`send_to`](Self::send_to) on another node routes to it),
    /// `"c.<n>"` otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = nucleus_stream::StreamHub::new();
    /// assert_eq!(&*hub.next_socket_id(), "c.1");
    /// assert_eq!(&*hub.next_socket_id(), "c.2");
    /// ```
    pub fn next_socket_id(&self) -> StrArc<str> {
        match self.inner.cluster.get() {
            Some(node) => node.ids.next_id(),
            None => self.inner.local_ids.next_id(),
        }
    }

    /// Names of rooms with members on this node, with their member counts.
    pub fn local_rooms(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        self.inner.rooms.for_each(|name, cell| {
            let n = cell.load().len();
            if n > 0 {
                out.push((name.to_string(), n));
            }
        });
        out
    }

    /// Who is present in `room` on this node (what `room_presence` returns), without awaiting.
    pub(crate) fn local_room_presence(&self, room: &str) -> Vec<PresenceKey> {
        self.inner
            .rooms
            .with(room, |cell| cell.presence())
            .unwrap_or_default()
    }

    /// Users with a socket on this node and their device counts.
    pub fn local_users(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        self.inner
            .presence
            .for_each(|user, devices| out.push((user.to_string(), devices)));
        out
    }
}
