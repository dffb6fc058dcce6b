//! The application's callbacks for a connection's life.

use async_trait::async_trait;

use crate::hub::StreamHub;
use crate::message::SocketMessage;
use crate::socket::WebSocket;

/// What an application does when a client connects, sends a message, or goes away.
///
/// A transport (the bundled server, or your own) calls [`on_connect`](Self::on_connect) once
/// the socket is registered, [`on_message`](Self::on_message) for each text or binary message
/// in order, and [`on_disconnect`](Self::on_disconnect) exactly once after the socket has been
/// unregistered (so it is already out of every room).
///
/// # Examples
///
/// ```
/// use async_trait::async_trait;
/// use nucleus_stream::{SocketMessage, StreamHandler, StreamHub, WebSocket};
///
/// struct ChatHandler;
///
/// #[async_trait]
/// impl StreamHandler for ChatHandler {
///     async fn on_connect(&self, hub: &StreamHub, socket: &WebSocket) {
///         hub.join_room(&socket.id, "lobby").await.ok();
///     }
///
///     async fn on_message(&self, hub: &StreamHub, socket: &WebSocket, msg: SocketMessage) {
///         if let SocketMessage::Text(text) = msg {
///             hub.broadcast_to_room_except("lobby", SocketMessage::text(&text), &socket.id)
///                 .await
///                 .ok();
///         }
///     }
///
///     async fn on_disconnect(&self, _hub: &StreamHub, socket_id: &str) {
///         println!("Disconnected: {socket_id}");
///     }
/// }
/// ```
#[async_trait]
pub trait StreamHandler: Send + Sync + 'static {
    /// The socket is registered and about to receive messages.
    async fn on_connect(&self, hub: &StreamHub, socket: &WebSocket) {
        let _ = (hub, socket);
    }

    /// A text or binary message arrived from the client.
    async fn on_message(&self, hub: &StreamHub, socket: &WebSocket, msg: SocketMessage);

    /// The connection ended and the socket has been unregistered.
    async fn on_disconnect(&self, hub: &StreamHub, socket_id: &str) {
        let _ = (hub, socket_id);
    }
}
