//! The connected-client handle.

use std::fmt;
use std::sync::Arc;

use crate::queue::Sender;

/// A connected client as the hub sees it: an id, an optional user id, string metadata, and
/// the producer half of the client's outbound queue.
///
/// Cloning is cheap (reference counts). The hub keeps its own clone from
/// [`register`](crate::StreamHub::register) until [`unregister`](crate::StreamHub::unregister).
///
/// # Examples
///
/// ```
/// use nucleus_stream::{channel, QueueConfig, WebSocket};
/// let (sender, _receiver) = channel(QueueConfig::default());
/// let socket = WebSocket::authenticated("conn-1", "user_123".to_string(), sender)
///     .with_metadata("ip", "192.168.1.1");
/// assert_eq!(&*socket.id, "conn-1");
/// assert_eq!(socket.user_id(), Some("user_123"));
/// assert_eq!(socket.metadata("ip"), Some("192.168.1.1"));
/// ```
#[derive(Clone)]
pub struct WebSocket {
    /// The socket's id, unique within a hub. (`&socket.id` coerces to `&str`.)
    pub id: Arc<str>,
    user_id: Option<Arc<str>>,
    metadata: Arc<[(Box<str>, Box<str>)]>,
    sender: Sender,
}

impl WebSocket {
    /// An anonymous socket.
    pub fn new(id: impl Into<Arc<str>>, sender: Sender) -> Self {
        Self {
            id: id.into(),
            user_id: None,
            metadata: Arc::from(Vec::new()),
            sender,
        }
    }

    /// A socket belonging to `user_id`; the hub tracks the user's presence across all of
    /// its sockets (devices).
    pub fn authenticated(
        id: impl Into<Arc<str>>,
        user_id: impl Into<Arc<str>>,
        sender: Sender,
    ) -> Self {
        Self {
            user_id: Some(user_id.into()),
            ..Self::new(id, sender)
        }
    }

    /// Adds (or replaces) a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        let mut entries: Vec<(Box<str>, Box<str>)> = self
            .metadata
            .iter()
            .filter(|(k, _)| **k != *key)
            .cloned()
            .collect();
        entries.push((key.into_boxed_str(), value.into().into_boxed_str()));
        self.metadata = Arc::from(entries);
        self
    }

    /// The socket's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The user this socket belongs to, if authenticated.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// A metadata value.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    /// All metadata entries, in insertion order.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.metadata.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The producer half of this socket's outbound queue.
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    pub(crate) fn user_arc(&self) -> Option<&Arc<str>> {
        self.user_id.as_ref()
    }
}

impl fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}
