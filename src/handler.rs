//! The application's callbacks for a connection's life.

use async_trait::async_trait;

use crate::disconnect::Disconnect;
use crate::hub::StreamHub;
use crate::message::SocketMessage;
use crate::socket::WebSocket;

/// What an application does when a client connects, sends a message, or goes away.
///
/// A transport (the bundled server, or your own) calls [`on_connect`](Self::on_connect) once
/// the socket is registered, [`on_message`](Self::on_message) for each text or binary message
/// in order (or [`on_messages`](Self::on_messages) for several that one read brought), and
/// [`on_disconnect_with`](Self::on_disconnect_with) exactly once after the socket
/// has been unregistered (so it is already out of every room). Its default body calls the
/// guide's [`on_disconnect`](Self::on_disconnect) with the socket id: implement whichever
/// you need — `on_disconnect_with` when you want the socket, the rooms it was in and the
/// [`DisconnectReason`](crate::DisconnectReason).
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

    /// Several messages arrived in one read: `msgs` holds them in order (at least two; a
    /// read of one message goes to [`on_message`](Self::on_message)). The default body
    /// hands them to `on_message` one at a time, in order, so a handler that implements
    /// only `on_message` sees no difference.
    ///
    /// Implement it to act on the burst at once: a client that publishes fast sends many
    /// messages per read, and [`StreamHub::publish_many_to_room`] delivers a run of them
    /// to a room recipient-major, touching each member's queue once per burst instead of
    /// once per message (`examples/chat.rs` does this; `BENCHMARKS.md` has the measurement).
    /// The connection handles nothing else of the client's until this returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use nucleus_stream::{async_trait, SocketMessage, StreamHandler, StreamHub, WebSocket};
    ///
    /// struct Relay;
    ///
    /// #[async_trait]
    /// impl StreamHandler for Relay {
    ///     async fn on_message(&self, hub: &StreamHub, socket: &WebSocket, msg: SocketMessage) {
    ///         self.on_messages(hub, socket, vec![msg]).await;
    ///     }
    ///
    ///     async fn on_messages(&self, hub: &StreamHub, _: &WebSocket, msgs: Vec<SocketMessage>) {
    ///         // The whole read, to the room's members in order.
    ///         hub.publish_many_to_room("lobby", None, msgs, |msg, _| msg).await.ok();
    ///     }
    /// }
    /// ```
    async fn on_messages(&self, hub: &StreamHub, socket: &WebSocket, msgs: Vec<SocketMessage>) {
        for msg in msgs {
            self.on_message(hub, socket, msg).await;
        }
    }

    /// The connection ended and the socket has been unregistered (called by the default
    /// [`on_disconnect_with`](Self::on_disconnect_with)).
    async fn on_disconnect(&self, hub: &StreamHub, socket_id: &str) {
        let _ = (hub, socket_id);
    }

    /// The connection ended and the socket has been unregistered: `disconnect` holds the
    /// socket (id, user, metadata), the rooms it was in and why it ended. The default body
    /// calls [`on_disconnect`](Self::on_disconnect) with the socket's id.
    ///
    /// # Examples
    ///
    /// ```
    /// use nucleus_stream::{async_trait, Disconnect, SocketMessage, StreamHandler, StreamHub, WebSocket};
    ///
    /// struct Announcer;
    ///
    /// #[async_trait]
    /// impl StreamHandler for Announcer {
    ///     async fn on_message(&self, _: &StreamHub, _: &WebSocket, _: SocketMessage) {}
    ///
    ///     async fn on_disconnect_with(&self, hub: &StreamHub, gone: &Disconnect) {
    ///         let text = format!("{} left ({})", gone.socket.id, gone.reason);
    ///         hub.broadcast_to_rooms(&gone.rooms, SocketMessage::text(text), None).await.ok();
    ///     }
    /// }
    /// ```
    async fn on_disconnect_with(&self, hub: &StreamHub, disconnect: &Disconnect) {
        self.on_disconnect(hub, &disconnect.socket.id).await;
    }
}
