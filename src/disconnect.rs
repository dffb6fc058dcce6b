//! Why a connection ended, and what it left: the context `on_disconnect_with` gets.

use std::fmt;
use std::sync::Arc as StrArc;

use crate::socket::WebSocket;

/// Why a connection ended.
///
/// # Examples
///
/// ```
/// use nucleus_stream::DisconnectReason;
/// let reason = DisconnectReason::ClientClosed { code: Some(1000) };
/// assert_eq!(reason.label(), "client_closed");
/// assert_eq!(reason.close_code(), Some(1000));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client sent a close frame, with this code if it gave one.
    ClientClosed {
        /// The client's close code.
        code: Option<u16>,
    },
    /// The connection ended without a closing handshake (reset, EOF, a failed write).
    ConnectionLost,
    /// The outbound queue overflowed: closed with 1008.
    SlowConsumer,
    /// Nothing arrived within the idle timeout: closed with 1001.
    IdleTimeout,
    /// The client broke the protocol or a limit: closed with this code (1002, 1007, 1009).
    ProtocolError {
        /// The close code sent.
        code: u16,
    },
    /// The client kept sending over the inbound rate limit: closed with 1008.
    RateLimited,
    /// The server is shutting down: closed with 1001.
    ServerShutdown,
    /// The application unregistered the socket or closed its queue: closed with 1000.
    Unregistered,
}

impl DisconnectReason {
    /// Every reason's [`label`](Self::label), in declaration order (for metrics).
    pub const LABELS: [&'static str; 8] = [
        "client_closed",
        "connection_lost",
        "slow_consumer",
        "idle_timeout",
        "protocol_error",
        "rate_limited",
        "server_shutdown",
        "unregistered",
    ];

    /// A short stable name (the `reason` label of the `nucleus_disconnects_total` metric).
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// Position in [`LABELS`](Self::LABELS).
    pub(crate) fn index(&self) -> usize {
        match self {
            DisconnectReason::ClientClosed { .. } => 0,
            DisconnectReason::ConnectionLost => 1,
            DisconnectReason::SlowConsumer => 2,
            DisconnectReason::IdleTimeout => 3,
            DisconnectReason::ProtocolError { .. } => 4,
            DisconnectReason::RateLimited => 5,
            DisconnectReason::ServerShutdown => 6,
            DisconnectReason::Unregistered => 7,
        }
    }

    /// The close code of the closing handshake: the client's, or the one the server sent.
    /// `None` when there was no handshake (or the client's close frame had no code).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            DisconnectReason::ClientClosed { code } => *code,
            DisconnectReason::ConnectionLost => None,
            DisconnectReason::SlowConsumer | DisconnectReason::RateLimited => Some(1008),
            DisconnectReason::IdleTimeout | DisconnectReason::ServerShutdown => Some(1001),
            DisconnectReason::ProtocolError { code } => Some(*code),
            DisconnectReason::Unregistered => Some(1000),
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.close_code() {
            Some(code) => write!(f, "{} ({code})", self.label()),
            None => f.write_str(self.label()),
        }
    }
}

/// What [`StreamHub::unregister`](crate::StreamHub::unregister) removed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Unregistered {
    /// The hub's handle of the socket (id, user, metadata).
    pub socket: WebSocket,
    /// The rooms the socket was in, now left (rooms it emptied are gone).
    pub rooms: Vec<StrArc<str>>,
    /// Whether this was its user's last socket (the user is now offline).
    pub went_offline: bool,
}

/// A connection's end, as [`StreamHandler::on_disconnect_with`](crate::StreamHandler::on_disconnect_with)
/// sees it: the socket, the rooms it was in, and why it ended. By then the socket is
/// unregistered.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Disconnect {
    /// The socket (id, user, metadata).
    pub socket: WebSocket,
    /// The rooms it was in when the connection ended. Empty if the application had already
    /// unregistered it (the reason is then [`DisconnectReason::Unregistered`]).
    pub rooms: Vec<StrArc<str>>,
    /// Why the connection ended.
    pub reason: DisconnectReason,
    /// Whether this was its user's last socket.
    pub went_offline: bool,
}

impl Disconnect {
    /// A disconnect of `socket` for `reason`, with what its unregistration removed (`None` if
    /// it was already unregistered).
    pub fn new(socket: WebSocket, reason: DisconnectReason, removed: Option<Unregistered>) -> Self {
        let (rooms, went_offline) = match removed {
            Some(r) => (r.rooms, r.went_offline),
            None => (Vec::new(), false),
        };
        Self {
            socket,
            rooms,
            reason,
            went_offline,
        }
    }
}
