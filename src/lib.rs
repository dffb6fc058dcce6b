//! # Nucleus Stream
//!
//! WebSocket rooms, broadcast and presence for latency-sensitive servers.
//!
//! - [`StreamHub`] tracks sockets, rooms and users, and delivers messages to one socket, a
//!   room, a user's devices or everyone. Its message paths take no lock: room membership is a
//!   copy-on-write snapshot in an arc-swap cell, and a broadcast walks it without waiting.
//! - [`SocketMessage`] payloads are shared [`bytes::Bytes`] buffers: fan-out to a thousand
//!   sockets bumps a reference count a thousand times and copies nothing.
//! - Each socket has a bounded outbound queue ([`channel`]) with an overflow policy, so a slow
//!   client never slows the others; any transport drains it.
//! - [`StreamHandler`] is the application's callbacks; the `server` feature (on by default)
//!   runs hub and handler over real WebSockets; the `axum` feature serves the same
//!   connections behind an axum router (`nucleus_stream::axum::StreamRoute`).
//! - Several processes can share rooms, direct messages and presence: the core calls a
//!   [`ClusterLink`](cluster_link::ClusterLink) hook, and the `redis` feature's `cluster`
//!   module implements it over Redis pub/sub.
//!
//! ```
//! use nucleus_stream::{channel, QueueConfig, SocketMessage, StreamHub, WebSocket};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let hub = StreamHub::new();
//! let (tx, mut rx) = channel(QueueConfig::default());
//! let socket = WebSocket::authenticated("conn-1", "alice".to_string(), tx);
//! hub.register(socket.clone()).await?;
//! hub.join_room(&socket.id, "general").await?;
//! hub.broadcast_to_room("general", SocketMessage::text("hi")).await?;
//! assert_eq!(rx.recv().await, Some(SocketMessage::text("hi")));
//! assert!(hub.is_user_online("alice").await);
//! # Ok::<(), nucleus_stream::StreamError>(())
//! # }).unwrap();
//! ```
#![warn(missing_docs)]

mod atomic_waker;
pub mod cluster_link;
mod disconnect;
mod entry;
mod error;
mod handler;
mod history;
mod hub;
mod index;
mod message;
#[cfg(feature = "metrics")]
pub mod metrics_export;
mod presence;
mod presence_events;
mod queue;
#[cfg(any(all(feature = "server", target_os = "linux"), nucleus_loom))]
mod readiness;
mod report;
mod room;
mod shared_message;
mod socket;
pub mod socket_id;
mod sync;
mod totals;

#[cfg(all(feature = "redis", not(nucleus_loom)))]
pub mod cluster;

#[cfg(all(feature = "server", not(nucleus_loom)))]
pub mod server;

#[cfg(all(feature = "axum", not(nucleus_loom)))]
pub mod axum;

pub use disconnect::{Disconnect, DisconnectReason, Unregistered};
pub use error::StreamError;
pub use handler::StreamHandler;
pub use history::{HistoryConfig, Recovery, StampFn, StreamPosition};
pub use hub::{HubConfig, HubStats, Published, StreamHub};
pub use message::{SocketMessage, Utf8Bytes};
pub use presence_events::{
    PresenceDiff, PresenceEvent, PresenceKey, PresenceRecvError, PresenceSubscription, RoomDiff,
};
/// The outbound queue's item storage, public for the loom models only.
#[cfg(nucleus_loom)]
#[doc(hidden)]
pub use queue::segments::Segments;
pub use queue::{
    CloseReason, MAX_BYTES_LIMIT, MAX_MESSAGES_LIMIT, OverflowPolicy, QueueConfig, Receiver,
    Sender, TryRecvError, TrySendError, channel,
};
/// A descriptor's readiness cell, public for the loom models only.
#[cfg(nucleus_loom)]
#[doc(hidden)]
pub use readiness::{BOTH, READABLE, Readiness, WRITABLE};
pub use report::BroadcastReport;
pub use room::Room;
pub use socket::WebSocket;
pub use totals::{HubTotals, SocketStats};

pub use async_trait::async_trait;
pub use bytes::Bytes;

/// The README's Rust snippets, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
