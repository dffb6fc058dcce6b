//! One connection's life: handshake, register, read/write loop, close, unregister.
//!
//! A connection is one task running one loop. Each turn polls, in order: the shutdown signal;
//! the write side (finish the pending flush, else take everything queued — up to the batch
//! limit — frame it into the write buffer and flush once); the read side (the next message);
//! and the heartbeat timer. Events that need the handler (a message) are handled between
//! polls, so messages reach `on_message` one at a time, in order.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc as StrArc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep, sleep, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::{debug, warn};

use crate::server::auth::Admission;
use crate::server::config::ServerConfig;
use crate::server::service::ServiceShared;
use crate::sync::{AtomicU64, Ordering};
use crate::{CloseReason, SocketMessage, StreamError, StreamHub, Utf8Bytes, WebSocket, channel};

/// Close code sent to a slow consumer (policy violation).
pub(crate) const SLOW_CONSUMER_CODE: u16 = 1008;

/// Source of server-generated socket ids, unique in the process.
/// Invariant: only ever incremented, so no two connections get the same number.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_socket_id() -> StrArc<str> {
    // ORDERING: uniqueness needs only the atomicity of the increment.
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    StrArc::from(format!("c{n:x}"))
}

/// An upgraded connection. Boxed so that moving it between the phases of a connection moves
/// a pointer, and so that each phase's future does not carry its own copy of it.
type Ws<S> = Box<WebSocketStream<S>>;

/// The tungstenite configuration of a connection under `config`.
fn ws_config(config: &ServerConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        // Frames accumulate in the write buffer until the batch's single flush (a batch
        // larger than this is written in pieces of about this size).
        .write_buffer_size(64 * 1024)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_frame_size))
}

/// The shutdown signal: `Some(deadline)` once a graceful shutdown has begun.
pub(crate) type ShutdownRx = watch::Receiver<Option<Instant>>;

/// Why a connection ended.
enum End {
    /// The client sent a close frame (its code, if any).
    PeerClosed(Option<u16>),
    /// The TCP connection ended without a closing handshake, or failed.
    PeerGone(Option<WsError>),
    /// The client broke the protocol or a limit; close with this code.
    Fault(u16, WsError),
    /// The outbound queue overflowed.
    SlowConsumer,
    /// The outbound queue was closed by the application (`unregister`, `Sender::close`).
    QueueClosed(CloseReason),
    /// Nothing arrived within the idle timeout.
    Idle,
    /// Graceful server shutdown.
    Shutdown(Instant),
    /// Writing to the client failed.
    WriteFailed(WsError),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::PeerClosed(Some(code)) => write!(f, "client closed ({code})"),
            End::PeerClosed(None) => write!(f, "client closed"),
            End::PeerGone(None) => write!(f, "connection lost"),
            End::PeerGone(Some(e)) => write!(f, "connection lost: {e}"),
            End::Fault(code, e) => write!(f, "client fault, close {code}: {e}"),
            End::SlowConsumer => write!(f, "slow consumer, close {SLOW_CONSUMER_CODE}"),
            End::QueueClosed(reason) => write!(f, "outbound queue closed: {reason:?}"),
            End::Idle => write!(f, "idle timeout"),
            End::Shutdown(_) => write!(f, "server shutdown"),
            End::WriteFailed(e) => write!(f, "write failed: {e}"),
        }
    }
}

enum Event {
    Incoming(Message),
    End(End),
    Tick,
}

/// Unregisters the socket if the task ends without doing so itself (it was aborted at the
/// shutdown deadline, or the handler panicked): no hub entry outlives its connection.
struct Registration {
    hub: StreamHub,
    id: StrArc<str>,
    armed: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.armed {
            // The hub's methods never await: one poll completes the future.
            let fut = self.hub.unregister(&self.id);
            let mut fut = std::pin::pin!(fut);
            let _ = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        }
    }
}

/// An open connection: register, serve, close, unregister.
pub(crate) async fn open<S>(
    shared: &ServiceShared,
    stream: S,
    leftover: Vec<u8>,
    admission: Admission,
    peer: Option<SocketAddr>,
    mut shutdown: ShutdownRx,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let ws: Ws<S> = Box::new(
        WebSocketStream::from_partially_read(
            stream,
            leftover,
            Role::Server,
            Some(ws_config(config)),
        )
        .await,
    );

    // --- Register. ---
    let hub = &shared.hub;
    let (socket, mut rx) = loop {
        let (tx, rx) = channel(config.queue);
        let id = next_socket_id();
        let mut socket = match &admission.user_id {
            Some(user) => WebSocket::authenticated(id, user.as_str(), tx),
            None => WebSocket::new(id, tx),
        };
        for (k, v) in &admission.metadata {
            socket = socket.with_metadata(k.as_str(), v.as_str());
        }
        match hub.register(socket.clone()).await {
            Ok(()) => break (socket, rx),
            // Another transport on the same hub uses this id: take the next one.
            Err(StreamError::SocketExists(_)) => continue,
            Err(e) => {
                warn!(?peer, error = %e, "register failed");
                return;
            }
        }
    };
    drop(admission);
    let mut registration = Registration {
        hub: hub.clone(),
        id: StrArc::clone(&socket.id),
        armed: true,
    };
    debug!(?peer, id = %socket.id, user = socket.user_id(), "connection opened");

    // --- Run. ---
    shared.handler.on_connect(hub, &socket).await;
    let (end, ws) = run(shared, ws, &socket, &mut rx, &mut shutdown).await;
    match &end {
        // Faults: the client broke a rule or stopped responding.
        End::Fault(..) | End::SlowConsumer | End::Idle => {
            warn!(id = %socket.id, reason = %end, "connection closed")
        }
        // Ordinary ends, including clients that vanish mid-write.
        End::PeerClosed(_)
        | End::PeerGone(_)
        | End::Shutdown(_)
        | End::QueueClosed(_)
        | End::WriteFailed(_) => debug!(id = %socket.id, reason = %end, "connection closed"),
    }

    // --- Close: unregister first so nothing new is queued, then finish the handshake. ---
    hub.unregister(&socket.id).await;
    registration.armed = false;
    let id = StrArc::clone(&socket.id);
    drop(socket);
    // The closing steps are boxed for the same reason as the handshake.
    let closing = match ws {
        Some(ws) => Box::pin(send_close(ws, &end, &mut rx, config)).await,
        None => None,
    };
    drop(rx);
    shared.handler.on_disconnect(hub, &id).await;
    if let Some((ws, deadline)) = closing {
        Box::pin(linger(ws, deadline)).await;
    }
}

/// The read/write loop. Returns why it ended and, unless the TCP connection is already
/// unusable, the stream for the closing handshake.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &ServiceShared,
    mut ws: Ws<S>,
    socket: &WebSocket,
    rx: &mut crate::Receiver,
    shutdown: &mut ShutdownRx,
) -> (End, Option<Ws<S>>) {
    let config = &shared.config;
    let hub = &shared.hub;
    if let Some(deadline) = *shutdown.borrow_and_update() {
        return (End::Shutdown(deadline), Some(ws));
    }
    let deadline_of = shutdown.clone();
    let shutdown_changed = shutdown.changed();
    let mut shutdown_changed = std::pin::pin!(shutdown_changed);
    let mut last_seen = Instant::now();
    let timer = sleep(config.ping_interval.min(config.idle_timeout));
    let mut timer = std::pin::pin!(timer);
    let mut batch: Vec<SocketMessage> = Vec::new();
    let mut flushing = false;

    loop {
        let event = poll_fn(|cx| {
            poll_once(
                cx,
                &mut ws,
                rx,
                &mut batch,
                &mut flushing,
                config.write_batch,
                shutdown_changed.as_mut(),
                timer.as_mut(),
            )
        })
        .await;
        match event {
            Event::Incoming(msg) => {
                last_seen = Instant::now();
                let msg = match msg {
                    Message::Text(text) => {
                        match Utf8Bytes::try_from_bytes(Bytes::from(text)) {
                            Ok(text) => SocketMessage::Text(text),
                            // Unreachable (tungstenite validated it); treated as the peer's fault.
                            Err(_) => {
                                return (
                                    End::Fault(1007, WsError::Utf8("invalid text".into())),
                                    Some(ws),
                                );
                            }
                        }
                    }
                    Message::Binary(data) => SocketMessage::Binary(data),
                    Message::Close(frame) => {
                        let code = frame.map(|f| u16::from(f.code));
                        return (End::PeerClosed(code), Some(ws));
                    }
                    // Pings are answered by tungstenite on the next read or flush; any
                    // control frame counts as activity.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                };
                shared.handler.on_message(hub, socket, msg).await;
            }
            Event::Tick => {
                let now = Instant::now();
                let idle_at = last_seen + config.idle_timeout;
                if now >= idle_at {
                    return (End::Idle, Some(ws));
                }
                if let Err(e) = Pin::new(&mut *ws).start_send(Message::Ping(Bytes::new())) {
                    return (End::WriteFailed(e), None);
                }
                flushing = true;
                timer
                    .as_mut()
                    .reset((now + config.ping_interval).min(idle_at));
            }
            Event::End(End::Shutdown(now)) => {
                let deadline = (*deadline_of.borrow()).unwrap_or(now);
                return (End::Shutdown(deadline), Some(ws));
            }
            Event::End(end) => {
                let usable = !matches!(end, End::PeerGone(_) | End::WriteFailed(_));
                return (end, usable.then_some(ws));
            }
        }
    }
}

/// One poll of everything a connection waits on. See the module docs for the order.
#[allow(clippy::too_many_arguments)]
fn poll_once<S: AsyncRead + AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    ws: &mut WebSocketStream<S>,
    rx: &mut crate::Receiver,
    batch: &mut Vec<SocketMessage>,
    flushing: &mut bool,
    write_batch: usize,
    shutdown: Pin<&mut impl Future<Output = Result<(), watch::error::RecvError>>>,
    timer: Pin<&mut Sleep>,
) -> Poll<Event> {
    if shutdown.poll(cx).is_ready() {
        // The deadline is read by the caller from `End::Shutdown`; the sender lives as long
        // as the server, so `Err` cannot happen, and is treated as an immediate shutdown.
        return Poll::Ready(Event::End(End::Shutdown(Instant::now())));
    }

    // Write side.
    loop {
        if *flushing {
            match Pin::new(&mut *ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => *flushing = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Event::End(End::WriteFailed(e))),
                Poll::Pending => {
                    // Stalled on a full socket: watch for a slow-consumer close meanwhile.
                    if let Poll::Ready(CloseReason::SlowConsumer) = rx.poll_closed(cx) {
                        return Poll::Ready(Event::End(End::SlowConsumer));
                    }
                    break;
                }
            }
        }
        if rx.close_reason() == Some(CloseReason::SlowConsumer) {
            // Discard the backlog: it is what the client could not keep up with.
            return Poll::Ready(Event::End(End::SlowConsumer));
        }
        match rx.poll_recv(cx) {
            Poll::Ready(Some(first)) => {
                batch.push(first);
                rx.try_recv_many(batch, write_batch.saturating_sub(1));
                for msg in batch.drain(..) {
                    if let Err(e) = Pin::new(&mut *ws).start_send(to_ws(msg)) {
                        return Poll::Ready(Event::End(End::WriteFailed(e)));
                    }
                }
                *flushing = true;
            }
            Poll::Ready(None) => {
                let reason = rx.close_reason().unwrap_or(CloseReason::Closed);
                let end = if reason == CloseReason::SlowConsumer {
                    End::SlowConsumer
                } else {
                    End::QueueClosed(reason)
                };
                return Poll::Ready(Event::End(end));
            }
            Poll::Pending => break,
        }
    }

    // Read side.
    match Pin::new(&mut *ws).poll_next(cx) {
        Poll::Ready(Some(Ok(msg))) => return Poll::Ready(Event::Incoming(msg)),
        Poll::Ready(Some(Err(e))) => return Poll::Ready(Event::End(classify(e))),
        Poll::Ready(None) => return Poll::Ready(Event::End(End::PeerGone(None))),
        Poll::Pending => {}
    }

    if timer.poll(cx).is_ready() {
        return Poll::Ready(Event::Tick);
    }
    Poll::Pending
}

/// Maps a read error to how the connection ends.
fn classify(e: WsError) -> End {
    match e {
        WsError::Capacity(_) => End::Fault(1009, e),
        WsError::Utf8(_) => End::Fault(1007, e),
        WsError::Protocol(ref p) => {
            use tokio_tungstenite::tungstenite::error::ProtocolError;
            match p {
                ProtocolError::ResetWithoutClosingHandshake => End::PeerGone(Some(e)),
                _ => End::Fault(1002, e),
            }
        }
        WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed => {
            End::PeerGone(Some(e))
        }
        _ => End::Fault(1011, e),
    }
}

/// A hub message as a WebSocket frame. Text goes out as a raw text frame: its UTF-8 was
/// checked when the message was made, so it is not checked again per recipient.
fn to_ws(msg: SocketMessage) -> Message {
    match msg {
        SocketMessage::Text(text) => Message::Frame(Frame::message(
            text.into_bytes(),
            OpCode::Data(Data::Text),
            true,
        )),
        SocketMessage::Binary(data) => Message::Binary(data),
    }
}

fn close_frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }
}

/// Sends what the end calls for — the backlog on shutdown, then our close frame (unless the
/// client closed first: tungstenite then replies with its own) — and flushes, all before the
/// close deadline: the close timeout, or the shutdown deadline if earlier. Returns the stream
/// and the deadline for [`linger`], or `None` if the connection is already unusable.
async fn send_close<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: Ws<S>,
    end: &End,
    rx: &mut crate::Receiver,
    config: &ServerConfig,
) -> Option<(Ws<S>, Instant)> {
    let mut deadline = Instant::now() + config.close_timeout;
    let frame = match end {
        End::PeerClosed(_) => None,
        End::Fault(code, _) => Some(close_frame(
            *code,
            match code {
                1009 => "message too big",
                1007 => "invalid utf-8",
                1002 => "protocol error",
                _ => "internal error",
            },
        )),
        End::SlowConsumer => Some(close_frame(SLOW_CONSUMER_CODE, "slow consumer")),
        End::QueueClosed(_) => Some(close_frame(1000, "")),
        End::Idle => Some(close_frame(1001, "idle timeout")),
        End::Shutdown(at) => {
            deadline = deadline.min(*at);
            Some(close_frame(1001, "server shutting down"))
        }
        End::PeerGone(_) | End::WriteFailed(_) => return None,
    };
    let sending = async {
        if let End::Shutdown(_) = end {
            // What was queued before the shutdown still goes out, ahead of the close frame.
            let mut backlog = Vec::new();
            while rx.try_recv_many(&mut backlog, config.write_batch) > 0 {
                for msg in backlog.drain(..) {
                    if Pin::new(&mut *ws).start_send(to_ws(msg)).is_err() {
                        return false;
                    }
                }
                if poll_fn(|cx| Pin::new(&mut *ws).poll_flush(cx))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
        }
        if let Some(frame) = frame {
            if Pin::new(&mut *ws)
                .start_send(Message::Close(Some(frame)))
                .is_err()
            {
                return false;
            }
        }
        if poll_fn(|cx| Pin::new(&mut *ws).poll_flush(cx))
            .await
            .is_err()
        {
            return false;
        }
        true
    };
    match timeout_at(deadline, sending).await {
        Ok(true) => Some((ws, deadline)),
        _ => None,
    }
}

/// Half-closes the TCP connection and reads (discarding) until the client closes its side or
/// the deadline passes. Dropping a socket with unread input makes the kernel send a reset,
/// which can destroy our close frame before the client reads it; this avoids that.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut ws: Ws<S>, deadline: Instant) {
    let tcp = ws.get_mut();
    let draining = async {
        if tcp.shutdown().await.is_err() {
            return;
        }
        let mut sink = vec![0u8; 1024];
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = timeout_at(deadline, draining).await;
}
