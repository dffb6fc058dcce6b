//! The crate's error type.

/// Everything a hub or message operation can fail with.
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a wildcard arm.
///
/// # Examples
///
/// ```
/// use nucleus_stream::{StreamError, StreamHub, SocketMessage};
/// # tokio_test_block_on(async {
/// let hub = StreamHub::new();
/// match hub.send_to("nobody", SocketMessage::text("hi")).await {
///     Err(StreamError::SocketNotFound(id)) => assert_eq!(id, "nobody"),
///     other => panic!("unexpected: {other:?}"),
/// }
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// No socket with this id is registered (it never was, or it has been unregistered).
    #[error("socket {0} not found")]
    SocketNotFound(String),

    /// The socket is registered but its outbound queue refused the message: the queue is
    /// closed (the connection is going away) or full under a policy that refuses the message.
    #[error("failed to send to socket {0}")]
    SendFailed(String),

    /// `register` was called with an id that is already registered. The hub is unchanged.
    #[error("socket {0} is already registered")]
    SocketExists(String),

    /// A room name was empty.
    #[error("room name is empty")]
    EmptyRoomName,

    /// A room name was longer than the hub's configured limit (bytes of UTF-8).
    #[error("room name is {len} bytes, the limit is {max}")]
    RoomNameTooLong {
        /// Length of the rejected name, in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },

    /// The socket is already in as many rooms as the hub allows; it was not added.
    #[error("socket {socket} is already in {max} rooms, the limit")]
    TooManyRooms {
        /// The socket that tried to join.
        socket: String,
        /// The configured limit.
        max: usize,
    },

    /// A text payload was not valid UTF-8.
    #[error("text payload is not valid UTF-8")]
    InvalidUtf8(#[source] std::str::Utf8Error),

    /// [`StreamHub::attach_cluster`](crate::StreamHub::attach_cluster) was called on a hub
    /// that already has a cluster.
    #[error("a cluster is already attached to this hub")]
    ClusterAttached,

    /// Serializing or deserializing JSON failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}
