//! One connection's life on an upgraded byte stream: register, read/write loop, close,
//! unregister.
//!
//! A connection is one task running one loop over any `AsyncRead + AsyncWrite` stream. Each
//! turn polls, in order: the shutdown signal; a frame already in the read buffer, if any;
//! the write side (finish writing the [`Outbox`], else take what is queued — up to the batch
//! limit — and write it with one vectored write); the read side ([`FrameReader`]: read, then
//! the next message or control frame); and the service's heartbeat beat
//! ([`heartbeat`](crate::server::heartbeat): one sweep per service, no timer per
//! connection). Messages reach the handler in order, between polls: the messages one read
//! brought, up to the next control frame or fault, as one burst (`on_messages`; a lone
//! message goes to `on_message`). What ends a burst is given back to the reader
//! ([`FrameReader::give_back`]) and handled after it, as is the rate limit's close met
//! within it (the gate keeps it): no connection field holds it. The loop is [`Run`], a
//! hand-written future.
//!
//! **Read first.** What one read brought is handled before the write side runs: a publisher
//! is usually a member of its own room, and writing between its messages sent each echo in
//! a `writev` of its own (measured: 7.6 deliveries per `writev` in 200 rooms × 11, 21 now).
//! The buffer is refilled only after the write side ran, so writes still happen between
//! reads.
//!
//! **Write late.** A writer runs when the runtime polls its task, which is after the task
//! that woke it (a publisher's connection, which handles every message already read before
//! it returns) has finished its poll: so the messages of one burst are queued before any
//! writer takes them, and share one `writev` (measured: 29 deliveries per `writev` in the
//! one-room saturating case). Yielding once more before taking the batch
//! (`tokio::task::yield_now`, the hidden `write_late` knob) was measured and rejected: it cut
//! that to 4.9 and quadrupled the CPU per delivery. `BENCHMARKS.md` has the runs.
//!
//! The end of a connection is one [`End`]; [`End::close_frame`] is the one place that maps
//! an end to what is sent to the client.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, timeout_at};
use tracing::{debug, warn};

use crate::disconnect::DisconnectReason;
use crate::entry::SocketEntry;
use crate::error::StreamError;
use crate::hub::StreamHub;
use crate::message::SocketMessage;
use crate::queue::{CloseReason, Receiver, channel};
use crate::server::auth::Admission;
use crate::server::config::ServerConfig;
use crate::server::frame::{self, FrameReader, Incoming, OP_PING, OP_PONG, ReadError};
use crate::server::heartbeat::{Beat, Pulse};
use crate::server::outbox::{BATCH_BYTES, Batch, Outbox};
use crate::server::rate_limit::{InboundGate, Verdict};
use crate::server::service::{ConnectionGuard, ServiceShared};
use crate::shared_message::SharedMessage;
use crate::socket::WebSocket;

/// Close code sent to a slow consumer (policy violation).
pub(crate) const SLOW_CONSUMER_CODE: u16 = 1008;

/// Why a connection ended.
pub(crate) enum End {
    /// The client sent a close frame (its code, if any).
    PeerClosed(Option<u16>),
    /// The stream ended without a closing handshake, or failed.
    PeerGone(Option<io::Error>),
    /// The client broke the protocol or a limit; close with this code.
    Fault(u16, &'static str),
    /// The outbound queue overflowed.
    SlowConsumer,
    /// The outbound queue was closed by the application (`unregister`, `Sender::close`).
    QueueClosed(CloseReason),
    /// Nothing arrived within the idle timeout.
    Idle,
    /// Graceful server shutdown, with its deadline.
    Shutdown(Instant),
    /// Writing to the client failed.
    WriteFailed(io::Error),
    /// The client kept sending over the inbound rate limit; close with 1008.
    RateLimited,
}

impl End {
    /// The public reason of this end.
    fn reason(&self) -> DisconnectReason {
        match self {
            End::PeerClosed(code) => DisconnectReason::ClientClosed { code: *code },
            End::PeerGone(_) | End::WriteFailed(_) => DisconnectReason::ConnectionLost,
            End::Fault(code, _) => DisconnectReason::ProtocolError { code: *code },
            End::SlowConsumer | End::QueueClosed(CloseReason::SlowConsumer) => {
                DisconnectReason::SlowConsumer
            }
            End::QueueClosed(_) => DisconnectReason::Unregistered,
            End::Idle => DisconnectReason::IdleTimeout,
            End::Shutdown(_) => DisconnectReason::ServerShutdown,
            End::RateLimited => DisconnectReason::RateLimited,
        }
    }

    /// The close frame this end sends, as `(code, reason)`; `Some((None, _))` is a close
    /// without a code. `None`: the stream is unusable, nothing is sent.
    fn close_frame(&self) -> Option<(Option<u16>, &'static str)> {
        Some(match self {
            // Echo the client's code (RFC 6455 §5.5.1).
            End::PeerClosed(code) => (*code, ""),
            End::Fault(code, _) => (
                Some(*code),
                match code {
                    1009 => "message too big",
                    1007 => "invalid utf-8",
                    1002 => "protocol error",
                    _ => "internal error",
                },
            ),
            End::SlowConsumer => (Some(SLOW_CONSUMER_CODE), "slow consumer"),
            End::RateLimited => (Some(1008), "rate limit exceeded"),
            End::QueueClosed(_) => (Some(1000), ""),
            End::Idle => (Some(1001), "idle timeout"),
            End::Shutdown(_) => (Some(1001), "server shutting down"),
            End::PeerGone(_) | End::WriteFailed(_) => return None,
        })
    }

    /// Whether frames already queued are still worth sending before the close.
    ///
    /// A client closed for flooding still gets what was queued for it, the error frames
    /// that refused its messages among them: it reads them, it is the reading side that
    /// keeps up. A client that broke the protocol gets the replies to the messages it sent
    /// before the bad frame (the frames of one read are all handled before anything is
    /// written, so those replies are still queued): RFC 6455 processing in order, what
    /// Autobahn's cases 3.2, 4.1.3, 5.15 and 6.4.3 check as strict.
    fn keeps_backlog(&self) -> bool {
        matches!(
            self,
            End::Shutdown(_) | End::QueueClosed(_) | End::RateLimited | End::Fault(..)
        )
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::PeerClosed(Some(code)) => write!(f, "client closed ({code})"),
            End::PeerClosed(None) => write!(f, "client closed"),
            End::PeerGone(None) => write!(f, "connection lost"),
            End::PeerGone(Some(e)) => write!(f, "connection lost: {e}"),
            End::Fault(code, why) => write!(f, "client fault, close {code}: {why}"),
            End::SlowConsumer => write!(f, "slow consumer, close {SLOW_CONSUMER_CODE}"),
            End::QueueClosed(reason) => write!(f, "outbound queue closed: {reason:?}"),
            End::Idle => write!(f, "idle timeout"),
            End::Shutdown(_) => write!(f, "server shutdown"),
            End::WriteFailed(e) => write!(f, "write failed: {e}"),
            End::RateLimited => write!(f, "over the inbound rate limit, close 1008"),
        }
    }
}

enum Event {
    Message(SocketMessage),
    /// A control frame arrived (activity).
    Activity,
    End(End),
    /// The service's heartbeat sweep made this many beats since the last look.
    Beats(u32),
}

/// The byte stream with its reader and writer state.
pub(crate) struct Wire<S> {
    stream: S,
    reader: FrameReader,
    outbox: Outbox,
}

impl<S> Wire<S> {
    /// `stream`, of which `leftover` was already read.
    pub(crate) fn new(stream: S, leftover: Vec<u8>) -> Self {
        Self {
            stream,
            reader: FrameReader::new(leftover),
            outbox: Outbox::default(),
        }
    }
}

/// Unregisters the socket if the task ends without doing so itself (it was dropped at the
/// shutdown deadline, or the handler panicked): no hub entry outlives its connection.
/// It holds the hub's entry of the socket: the connection's one handle to its socket, a
/// pointer (a clone of the socket was 56 bytes of every open connection's future).
struct Registration {
    hub: StreamHub,
    entry: Arc<SocketEntry>,
    armed: bool,
}

impl Registration {
    fn socket(&self) -> &WebSocket {
        &self.entry.socket
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.armed {
            // The hub's methods never await: one poll completes the future.
            let fut = self.hub.unregister(&self.entry.socket.id);
            let mut fut = std::pin::pin!(fut);
            let _ = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        }
    }
}

/// An open connection: register, serve, close, unregister.
///
/// A plain function returning an `async move` block, not an `async fn`: an `async fn` keeps
/// its arguments and the locals moved out of them side by side for its whole life (the
/// stream and reader twice), and this future is what every open connection holds.
pub(crate) fn open<S>(
    wire: Wire<S>,
    admission: Admission,
    peer: Option<SocketAddr>,
    guard: ConnectionGuard,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed, and built before the block so that the block does not capture the admission
    // and the peer address for the connection's whole life: they are needed only here.
    let registering = Box::pin(register(Arc::clone(guard.shared()), admission, peer));
    let mut wire = wire;
    let mut guard = guard;
    async move {
        let Some((registration, mut rx)) = registering.await else {
            return;
        };
        // From here a shutdown reaches the connection through its queue.
        let shutting_down = guard.serve(registration.socket().sender()).is_some();
        // `on_connect`, then the loop: one future, with no reference or deadline of its own
        // kept beside it across the await (they were 40 bytes of every connection).
        let end = run(
            guard.shared(),
            &mut wire,
            registration.socket(),
            &mut rx,
            shutting_down,
        )
        .await;
        // The closing steps run once, at the end: boxed, so that their state (the end, the
        // disconnect record, timers, a drain buffer) does not size every connection's future
        // for its whole life (measured with `-Zprint-type-sizes`: 920 -> 776 bytes).
        Box::pin(close(guard.shared(), wire, rx, registration, end)).await;
    }
}

/// Logs the end, unregisters the socket (so nothing new is queued), finishes the closing
/// handshake and runs `on_disconnect`.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &ServiceShared,
    mut wire: Wire<S>,
    mut rx: Receiver,
    mut registration: Registration,
    end: End,
) {
    let (config, hub) = (&shared.config, &shared.hub);
    let socket = registration.socket();
    match &end {
        // Faults: the client broke a rule or stopped responding.
        End::Fault(..) | End::SlowConsumer | End::Idle | End::RateLimited => {
            warn!(id = %socket.id, reason = %end, "connection closed")
        }
        // Ordinary ends, including clients that vanish mid-write.
        End::PeerClosed(_)
        | End::PeerGone(_)
        | End::Shutdown(_)
        | End::QueueClosed(_)
        | End::WriteFailed(_) => debug!(id = %socket.id, reason = %end, "connection closed"),
    }
    let disconnect = hub.end_connection(socket, end.reason()).await;
    registration.armed = false;
    drop(registration);
    let linger_until = send_close(&mut wire, &end, &mut rx, config).await;
    drop(rx);
    shared.handler.on_disconnect_with(hub, &disconnect).await;
    if let Some(deadline) = linger_until {
        linger(&mut wire.stream, deadline).await;
    }
}

/// Registers a new socket for `admission` in the hub (taking the next id if another
/// transport on the same hub already uses one). `None` if the hub refused it.
async fn register(
    shared: Arc<ServiceShared>,
    admission: Admission,
    peer: Option<SocketAddr>,
) -> Option<(Registration, Receiver)> {
    let config = &shared.config;
    let hub = &shared.hub;
    loop {
        let (tx, rx) = channel(config.queue);
        // The hub's ids name the node in a cluster, so `send_to` elsewhere routes here.
        let id = hub.next_socket_id();
        let mut socket = match &admission.user_id {
            Some(user) => WebSocket::authenticated(id, user.as_str(), tx),
            None => WebSocket::new(id, tx),
        };
        for (k, v) in &admission.metadata {
            socket = socket.with_metadata(k.as_str(), v.as_str());
        }
        match hub.register_entry(socket) {
            Ok(entry) => {
                let socket = &entry.socket;
                debug!(?peer, id = %socket.id, user = socket.user_id(), "connection opened");
                let registration = Registration {
                    hub: hub.clone(),
                    entry,
                    armed: true,
                };
                return Some((registration, rx));
            }
            // Another transport on the same hub uses this id: take the next one.
            Err(StreamError::SocketExists(_)) => continue,
            Err(e) => {
                warn!(?peer, error = %e, "register failed");
                return None;
            }
        }
    }
}

/// `on_connect`, then the read/write loop (unless the service is `shutting_down`: then the
/// connection ends once `on_connect` returns). Returns why it ended.
fn run<'a, S: AsyncRead + AsyncWrite + Unpin>(
    shared: &'a ServiceShared,
    wire: &'a mut Wire<S>,
    socket: &'a WebSocket,
    rx: &'a mut Receiver,
    shutting_down: bool,
) -> Run<'a, S> {
    Run {
        shared,
        wire,
        socket,
        rx,
        pulse: shared.heartbeat.pulse(),
        // The writer has yielded once since it saw queued messages (see "write late").
        yielded: !shared.config.write_late,
        shutting_down,
        inbound: InboundGate::new(shared.config.inbound_rate.as_ref()),
        handling: Some(shared.handler.on_connect(&shared.hub, socket)),
    }
}

/// The read/write loop as a hand-written future: what every open connection holds while it
/// runs. An `async fn` with the same loop was 256 bytes (`-Zprint-type-sizes`: separate
/// slots for the event, the message and the handler's future, and 40 bytes of padding).
struct Run<'a, S> {
    shared: &'a ServiceShared,
    wire: &'a mut Wire<S>,
    socket: &'a WebSocket,
    rx: &'a mut Receiver,
    pulse: Pulse,
    yielded: bool,
    /// The service was shutting down when the connection started: it ends once `on_connect`
    /// returns.
    shutting_down: bool,
    inbound: InboundGate,
    /// The handler's future being run, if any: `on_connect` first, then each message's
    /// `on_message`.
    handling: Option<Pin<Box<dyn Future<Output = ()> + Send + 'a>>>,
}

/// Room for the messages of a burst, reserved when a read brings a second one (then more
/// usually follow: the load generator's publishers keep 32 in flight).
const BURST_CAPACITY: usize = 16;

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Run<'_, S> {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        // Every field is `Unpin` (references, a box, plain values).
        let this = self.get_mut();
        let (shared, socket) = (this.shared, this.socket);
        let (config, hub, heartbeat) = (&shared.config, &shared.hub, &shared.heartbeat);
        loop {
            // Messages reach the handler one at a time, in order: nothing else is polled
            // while its future runs.
            if let Some(handling) = &mut this.handling {
                match handling.as_mut().poll(cx) {
                    Poll::Ready(()) => this.handling = None,
                    Poll::Pending => return Poll::Pending,
                }
                // The rate limit's close, met while reading a burst, once the messages
                // before it were handled.
                if this.inbound.closing(config.inbound_rate.as_ref()) {
                    return Poll::Ready(End::RateLimited);
                }
                if std::mem::take(&mut this.shutting_down) {
                    let deadline = (*shared.shutdown.borrow()).unwrap_or_else(Instant::now);
                    return Poll::Ready(End::Shutdown(deadline));
                }
            }
            let event = poll_once(
                cx,
                this.wire,
                this.rx,
                shared,
                &mut this.yielded,
                &mut this.pulse,
            );
            let Poll::Ready(event) = event else {
                return Poll::Pending;
            };
            match event {
                Event::Message(msg) => {
                    this.pulse.activity();
                    let limit = config.inbound_rate.as_ref();
                    match this.inbound.check(limit, hub, socket, msg.len()) {
                        Verdict::Admit => {}
                        Verdict::Refuse => continue,
                        Verdict::Close => return Poll::Ready(End::RateLimited),
                    }
                    // The rest of what the read brought goes with it, as one burst, up to
                    // anything else (a control frame, a fault), which is given back to the
                    // reader for after the burst.
                    let (mut first, mut burst) = (Some(msg), Vec::new());
                    while let Some(read) = this.wire.reader.next_buffered(&shared.read_limits) {
                        let next = match read {
                            Ok(Incoming::Message(next)) => next,
                            other => {
                                this.wire.reader.give_back(other);
                                break;
                            }
                        };
                        this.pulse.activity();
                        match this.inbound.check(limit, hub, socket, next.len()) {
                            Verdict::Admit => {}
                            Verdict::Refuse => continue,
                            // The gate keeps the verdict: the connection ends after the burst.
                            Verdict::Close => break,
                        }
                        if let Some(first) = first.take() {
                            burst.reserve(BURST_CAPACITY);
                            burst.push(first);
                        }
                        burst.push(next);
                    }
                    this.handling = Some(match first {
                        Some(msg) => shared.handler.on_message(hub, socket, msg),
                        None => shared.handler.on_messages(hub, socket, burst),
                    });
                }
                Event::Activity => this.pulse.activity(),
                Event::Beats(n) => match this.pulse.on_beats(n, heartbeat) {
                    Beat::Nothing => {}
                    Beat::Ping => this
                        .wire
                        .outbox
                        .push_control(frame::control_frame(OP_PING, &[])),
                    Beat::Idle => return Poll::Ready(End::Idle),
                },
                Event::End(end) => return Poll::Ready(end),
            }
        }
    }
}

/// Takes up to a batch of queued messages, starting with `first`, into the outbox.
fn take_batch(outbox: &mut Outbox, first: SharedMessage, rx: &mut Receiver, config: &ServerConfig) {
    let mut batch = outbox.batch(config.coalesce_below);
    batch.push(&first);
    drop(first);
    let wants_more =
        |batch: &Batch<'_>, n: usize| n < config.write_batch && batch.bytes < BATCH_BYTES;
    let mut n = 1;
    if !wants_more(&batch, n) {
        return;
    }
    // One release of the queue's room for the whole batch (measured: see the queue's docs).
    rx.try_recv_shared_while(|msg| {
        batch.push(&msg);
        n += 1;
        wants_more(&batch, n)
    });
}

/// One poll of everything a connection waits on. See the module docs for the order.
fn poll_once<S: AsyncRead + AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    wire: &mut Wire<S>,
    rx: &mut Receiver,
    shared: &ServiceShared,
    yielded: &mut bool,
    pulse: &mut Pulse,
) -> Poll<Event> {
    let (config, heartbeat, limits) = (&shared.config, &shared.heartbeat, &shared.read_limits);
    // A shutdown closes every connection's queue (which wakes it): a closed queue while the
    // service shuts down ends the connection at once, its backlog still to be sent.
    if rx.is_closed() {
        if let Some(deadline) = *shared.shutdown.borrow() {
            return Poll::Ready(Event::End(End::Shutdown(deadline)));
        }
    }

    // Input already buffered comes first: a publisher is usually a member of its own room,
    // and writing its queue between its messages would send each echo in a write of its
    // own; this way one read's messages share one write (measured: 200 rooms x 11, a
    // publisher's 17 messages of one read went out in 17 `writev`s).
    if let Some(read) = wire.reader.next_buffered(limits) {
        return on_read(cx, wire, read);
    }

    // Write side.
    loop {
        if !wire.outbox.is_empty() {
            match wire.outbox.poll_write(cx, &mut wire.stream) {
                Poll::Ready(Ok(())) => {}
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
        if !*yielded && !rx.is_empty() {
            // Write late: go to the back of the run queue once (a self-wake; unlike
            // `yield_now`, this does not make the worker poll the I/O driver early), so that
            // the tasks already ready (other publishers) queue their messages too.
            *yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match rx.poll_recv_shared(cx) {
            Poll::Ready(Some(first)) => {
                take_batch(&mut wire.outbox, first, rx, config);
                *yielded = !config.write_late;
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
    if let Poll::Ready(read) = wire.reader.poll_next(cx, &mut wire.stream, limits) {
        return on_read(cx, wire, read);
    }

    // Last, after the queue's waker is registered (every path here registered it): a sweep
    // advances the beat before it wakes, so a beat made after this look wakes us again.
    if let Some(n) = pulse.take_beats(heartbeat) {
        return Poll::Ready(Event::Beats(n));
    }
    Poll::Pending
}

/// What a connection does with what its reader produced.
fn on_read<S: AsyncRead + AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    wire: &mut Wire<S>,
    read: Result<Incoming, ReadError>,
) -> Poll<Event> {
    Poll::Ready(match read {
        Ok(Incoming::Message(msg)) => Event::Message(msg),
        Ok(Incoming::Ping(payload)) => {
            wire.outbox
                .push_control(frame::control_frame(OP_PONG, &payload));
            // Write the pong now (and look at the reader again after it).
            match wire.outbox.poll_write(cx, &mut wire.stream) {
                Poll::Ready(Err(e)) => Event::End(End::WriteFailed(e)),
                _ => Event::Activity,
            }
        }
        Ok(Incoming::Pong) => Event::Activity,
        Ok(Incoming::Close(code)) => Event::End(End::PeerClosed(code)),
        Err(ReadError::Fault(code, why)) => Event::End(End::Fault(code, why)),
        Err(ReadError::Eof) => Event::End(End::PeerGone(None)),
        Err(ReadError::Io(e)) => Event::End(End::PeerGone(Some(e))),
    })
}

/// Sends what the end calls for — the backlog (on shutdown, queue close, a protocol fault or
/// flooding; not for a slow consumer), then the close frame — all before the close deadline: the close timeout, or the shutdown deadline if
/// earlier. Returns the deadline for [`linger`], or `None` if the stream is unusable.
async fn send_close<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    end: &End,
    rx: &mut Receiver,
    config: &ServerConfig,
) -> Option<Instant> {
    let (code, reason) = end.close_frame()?;
    let mut deadline = Instant::now() + config.close_timeout;
    if let End::Shutdown(at) = end {
        deadline = deadline.min(*at);
    }
    if matches!(end, End::SlowConsumer) {
        // The client cannot keep up: nothing more but the close.
        wire.outbox.discard_unstarted();
    }
    let sending = async {
        if end.keeps_backlog() {
            // What was queued before the end still goes out, ahead of the close frame.
            while let Ok(first) = rx.try_recv_shared() {
                poll_fn(|cx| wire.outbox.poll_write(cx, &mut wire.stream)).await?;
                take_batch(&mut wire.outbox, first, rx, config);
            }
        }
        wire.outbox.push_back(frame::close_frame(code, reason));
        poll_fn(|cx| wire.outbox.poll_write(cx, &mut wire.stream)).await
    };
    match timeout_at(deadline, sending).await {
        Ok(Ok(())) => Some(deadline),
        _ => None,
    }
}

/// Half-closes the stream and reads (discarding) until the client closes its side or the
/// deadline passes. Dropping a socket with unread input makes the kernel send a reset,
/// which can destroy our close frame before the client reads it; this avoids that.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, deadline: Instant) {
    let draining = async {
        if stream.shutdown().await.is_err() {
            return;
        }
        let mut sink = [std::mem::MaybeUninit::<u8>::uninit(); 512];
        loop {
            let mut buf = ReadBuf::uninit(&mut sink);
            match poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, &mut buf)).await {
                Ok(()) if !buf.filled().is_empty() => {}
                _ => break,
            }
        }
    };
    let _ = timeout_at(deadline, draining).await;
}
