//! [`StreamService`]: the hub's connection, runnable on any already-upgraded byte stream.
//!
//! The bundled [`Server`](crate::server::Server) is a TCP accept loop and an HTTP upgrade in
//! front of a `StreamService`; another stack (axum, hyper, a TLS acceptor, a test) does its
//! own upgrade and hands the upgraded stream to [`StreamService::serve_upgraded`]. Every
//! connection, whichever stack accepted it, runs the same loop with the same
//! [`ServerConfig`] and shares one shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};

use crate::handler::StreamHandler;
use crate::hub::StreamHub;
use crate::queue::Sender;
use crate::server::auth::Admission;
use crate::server::config::ServerConfig;
use crate::server::connection::{self, Wire};
use crate::server::frame::ReadLimits;
use crate::server::heartbeat::Heartbeat;
use crate::server::slot_list::SlotList;
use crate::sync::{Mutex, lock};

/// After the shutdown deadline, how long a connection gets to finish its last steps
/// (unregister, `on_disconnect`) before its future gives up (a handler that never returns).
pub(crate) const ABORT_GRACE: Duration = Duration::from_millis(500);

/// Runs the hub's WebSocket connections on byte streams that are already upgraded.
///
/// Cheap to clone (one `Arc`); every clone is the same service: one connection count, one
/// shutdown.
///
/// # Examples
///
/// Serving a stream that some other code upgraded (here: the server half of an in-memory
/// pipe; in practice hyper's `Upgraded`, a TLS stream or a `TcpStream`):
///
/// ```
/// use nucleus_stream::server::{Admission, ServerConfig, StreamService};
/// use nucleus_stream::{async_trait, SocketMessage, StreamHandler, StreamHub, WebSocket};
///
/// struct Echo;
///
/// #[async_trait]
/// impl StreamHandler for Echo {
///     async fn on_message(&self, hub: &StreamHub, socket: &WebSocket, msg: SocketMessage) {
///         hub.send_to(&socket.id, msg).await.ok();
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let service = StreamService::new(StreamHub::new(), Echo, ServerConfig::default());
/// let (client, server_side) = tokio::io::duplex(4096);
/// let connection = service.serve_upgraded(server_side, Admission::user("alice"), None);
/// let task = tokio::spawn(connection);
/// # tokio::task::yield_now().await;
/// drop(client); // the client goes away
/// task.await.unwrap();
/// assert_eq!(service.connections(), 0);
/// service.shutdown();
/// service.stopped().await;
/// # });
/// ```
#[derive(Clone)]
pub struct StreamService {
    shared: Arc<ServiceShared>,
}

/// What every connection of one service shares.
pub(crate) struct ServiceShared {
    pub(crate) hub: StreamHub,
    pub(crate) handler: Arc<dyn StreamHandler>,
    pub(crate) config: ServerConfig,
    /// `Some(deadline)` once shutdown has begun.
    pub(crate) shutdown: watch::Sender<Option<Instant>>,
    /// Connections being served (futures from `serve_upgraded` not yet finished or
    /// dropped). Changed only by [`ConnectionGuard`].
    pub(crate) open: watch::Sender<usize>,
    /// The outbound queues of the registered connections, through which
    /// [`StreamService::shutdown`] and the heartbeat sweep reach each of them.
    serving: Mutex<Serving>,
    /// The beat the sweep advances and the connections count.
    pub(crate) heartbeat: Heartbeat,
    /// The frame readers' limits, from `config` (made once here, not per poll nor kept in
    /// every reader).
    pub(crate) read_limits: ReadLimits,
}

/// The outbound queues of a service's registered connections: [`StreamService::shutdown`]
/// closes each, which wakes its connection, and the connection, finding its queue closed
/// while the service shuts down, ends with 1001. One queue handle per connection here
/// instead of a `watch` receiver and its `changed()` future in every connection's future
/// (16 + 120 bytes, `-Zprint-type-sizes`).
#[derive(Default)]
struct Serving {
    /// Invariant: slot `i` holds a queue exactly while a [`ConnectionGuard`] holds `i`.
    queues: SlotList<Sender>,
    /// Invariant: `true` exactly while a sweep task of this service exists (it clears this
    /// when it ends, dropped with its runtime too).
    sweeping: bool,
}

impl StreamService {
    /// A service for `hub` whose connections call `handler`, under `config`.
    pub fn new<H: StreamHandler>(hub: StreamHub, handler: H, config: ServerConfig) -> Self {
        Self::with_shared_handler(hub, Arc::new(handler), config)
    }

    /// Like [`new`](Self::new), with a handler you keep a reference to.
    pub fn with_shared_handler(
        hub: StreamHub,
        handler: Arc<dyn StreamHandler>,
        config: ServerConfig,
    ) -> Self {
        let (shutdown, _) = watch::channel(None);
        let (open, _) = watch::channel(0);
        Self {
            shared: Arc::new(ServiceShared {
                hub,
                handler,
                shutdown,
                open,
                serving: Mutex::new(Serving::default()),
                heartbeat: Heartbeat::new(&config),
                read_limits: ReadLimits::new(config.max_frame_size, config.max_message_size)
                    .read_chunk(config.read_buffer_size),
                config,
            }),
        }
    }

    /// Runs one WebSocket connection on `stream`, an already-upgraded byte stream (the HTTP
    /// handshake is done; the next bytes are WebSocket frames from the client), until it ends.
    ///
    /// This is the entry point for any stack that does its own upgrade: hyper (wrap its
    /// `Upgraded` in `hyper_util::rt::TokioIo`), another framework, a TLS acceptor, a test
    /// over `tokio::io::duplex`. The bundled server and the axum route (feature `axum`) both
    /// end here. The caller decides admission (Origin, auth, limits) and passes the result
    /// as `admission`.
    ///
    /// The connection is registered in the hub under a fresh id from
    /// [`StreamHub::next_socket_id`] (node-aware in a cluster) (as
    /// `admission`'s user, with its metadata), [`on_connect`](StreamHandler::on_connect)
    /// runs, then messages go to [`on_message`](StreamHandler::on_message) in order while
    /// everything queued for the socket is written to it, under the service's
    /// [`ServerConfig`]: size limits (1009), UTF-8 (1007), protocol errors (1002), heartbeats
    /// and idle timeout (1001), the outbound queue's bound and slow-consumer policy (1008),
    /// close timeout, and graceful [`shutdown`](Self::shutdown) (1001 after the backlog). At
    /// the end the socket is unregistered and then
    /// [`on_disconnect`](StreamHandler::on_disconnect) runs, exactly once.
    ///
    /// `peer` is only used in logs. The future is `'static`: spawn it. Dropping it early
    /// still unregisters the socket (but skips `on_disconnect`). It counts in
    /// [`connections`](Self::connections) from the moment it is created until it completes or
    /// is dropped. Called after `shutdown`, the connection is closed with 1001 at once.
    pub fn serve_upgraded<S>(
        &self,
        stream: S,
        admission: Admission,
        peer: Option<SocketAddr>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_with_leftover(stream, Vec::new(), admission, peer)
    }

    /// [`serve_upgraded`](Self::serve_upgraded) for a stream of which `leftover` was already
    /// read (bytes that followed the upgrade request).
    pub(crate) fn serve_with_leftover<S>(
        &self,
        stream: S,
        leftover: Vec<u8>,
        admission: Admission,
        peer: Option<SocketAddr>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut connection = Box::pin(self.connection(stream, leftover, admission, peer));
        async move {
            // The connection closes itself by the shutdown deadline; past it plus a grace (a
            // handler that never returns), it is dropped: its guard still unregisters it.
            let deadline = async {
                let deadline = shutdown
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|d| *d)
                    .unwrap_or_else(Instant::now);
                sleep_until(deadline + ABORT_GRACE).await;
            };
            tokio::select! {
                () = connection.as_mut() => {}
                () = deadline => tracing::warn!("connection still running past the shutdown deadline: dropped"),
            }
        }
    }

    /// The connection on `stream` as one boxed future, counted in
    /// [`connections`](Self::connections) while it lives, without the drop at the shutdown
    /// deadline that [`serve_with_leftover`](Self::serve_with_leftover) adds: the bundled
    /// server enforces that deadline for all its connections at once (a timer per connection
    /// would cost every idle connection its size).
    pub(crate) fn connection<S>(
        &self,
        stream: S,
        leftover: Vec<u8>,
        admission: Admission,
        peer: Option<SocketAddr>,
    ) -> impl Future<Output = ()> + Send + 'static + use<S>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let guard = ConnectionGuard::new(Arc::clone(&self.shared));
        let wire = Wire::new(stream, leftover);
        connection::open(wire, admission, peer, guard)
    }

    /// Begins a graceful shutdown (later calls do nothing): every connection gets what is
    /// already queued for it, then close 1001, and ends when the client completes the close
    /// or at the deadline ([`shutdown_timeout`](ServerConfig::shutdown_timeout)), whichever
    /// comes first. A connection still running half a second past the deadline (a handler
    /// that never returns) is dropped: unregistered, without its `on_disconnect`.
    pub fn shutdown(&self) {
        let deadline = Instant::now() + self.shared.config.shutdown_timeout;
        let begun = self.shared.shutdown.send_if_modified(|state| {
            if state.is_none() {
                *state = Some(deadline);
                true
            } else {
                false
            }
        });
        if begun {
            // After the deadline is set: a connection registering meanwhile either is in
            // `serving` now or reads the deadline once it is (`ConnectionGuard::serve`).
            for queue in lock(&self.shared.serving).queues.iter() {
                queue.close();
            }
        }
    }

    /// Whether [`shutdown`](Self::shutdown) has been called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.borrow().is_some()
    }

    /// Resolves once [`shutdown`](Self::shutdown) has been called and every connection has
    /// ended (each unregistered and its `on_disconnect` run, or dropped past the deadline).
    pub async fn stopped(&self) {
        let mut shutdown = self.shared.shutdown.subscribe();
        // `Err` cannot happen: `self` holds the sender.
        let _ = shutdown.wait_for(Option::is_some).await;
        self.idle().await;
    }

    /// Resolves when no connection is being served (at once if none is).
    pub async fn idle(&self) {
        let mut open = self.shared.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// Connections being served now.
    pub fn connections(&self) -> usize {
        *self.shared.open.borrow()
    }

    /// The hub the connections are registered in.
    pub fn hub(&self) -> &StreamHub {
        &self.shared.hub
    }

    /// The configuration every connection runs under.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    pub(crate) fn shared(&self) -> &Arc<ServiceShared> {
        &self.shared
    }

    /// Counts one more connection in [`connections`](Self::connections) unless `limit` are
    /// already counted (check and count are one step): a transport holds it from admitting
    /// an upgrade until [`serve_upgraded`](Self::serve_upgraded) has made the connection's
    /// future, so that the limit and [`stopped`](Self::stopped) see the connection
    /// meanwhile.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn reserve(&self, limit: usize) -> Option<ConnectionGuard> {
        let mut reserved = false;
        self.shared.open.send_if_modified(|n| {
            reserved = *n < limit;
            if reserved {
                *n += 1;
            }
            reserved
        });
        reserved.then(|| ConnectionGuard {
            shared: Arc::clone(&self.shared),
            slot: None,
        })
    }
}

impl std::fmt::Debug for StreamService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamService")
            .field("connections", &self.connections())
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}

/// Counts a connection in `open` from creation to drop.
pub(crate) struct ConnectionGuard {
    shared: Arc<ServiceShared>,
    /// The connection's slot in the service's `serving` list, once registered (`u32`: the
    /// guard is in every connection's future).
    slot: Option<u32>,
}

impl ConnectionGuard {
    fn new(shared: Arc<ServiceShared>) -> Self {
        shared.open.send_modify(|n| *n += 1);
        Self { shared, slot: None }
    }

    /// The service this connection belongs to.
    pub(crate) fn shared(&self) -> &Arc<ServiceShared> {
        &self.shared
    }

    /// Puts the registered connection's outbound `queue` where a shutdown reaches it, then
    /// returns the shutdown deadline if one has begun: either the shutdown closes the queue
    /// (it began after this), or the caller sees its deadline here.
    pub(crate) fn serve(&mut self, queue: &Sender) -> Option<Instant> {
        {
            let mut serving = lock(&self.shared.serving);
            let slot = serving.queues.insert(queue.clone());
            // A list of more than 4 billion slots cannot be (each holds a connection).
            self.slot = u32::try_from(slot).ok();
            if !serving.sweeping {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    serving.sweeping = true;
                    runtime.spawn(sweep(Arc::downgrade(&self.shared)));
                }
            }
        }
        *self.shared.shutdown.borrow()
    }
}

/// The service's heartbeat sweep: every period, advance the beat and wake every registered
/// connection, which then pings or closes as its [`Pulse`](crate::server::heartbeat::Pulse)
/// says. Ends when the service has no registered connection left at a sweep (the next
/// [`ConnectionGuard::serve`] starts another) or is gone.
async fn sweep(service: Weak<ServiceShared>) {
    /// Clears `sweeping` if the task is dropped before it ends (with its runtime).
    struct Sweeping(Option<Weak<ServiceShared>>);
    impl Drop for Sweeping {
        fn drop(&mut self) {
            if let Some(shared) = self.0.take().and_then(|weak| weak.upgrade()) {
                lock(&shared.serving).sweeping = false;
            }
        }
    }
    let Some(period) = service.upgrade().map(|s| s.heartbeat.period()) else {
        return;
    };
    let mut sweeping = Sweeping(Some(service.clone()));
    let mut beats = interval_at(Instant::now() + period, period);
    // A sweep that fell behind (a stalled runtime) does not beat in a burst to catch up.
    beats.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        beats.tick().await;
        let Some(shared) = service.upgrade() else {
            return;
        };
        let mut serving = lock(&shared.serving);
        if serving.queues.is_empty() {
            // Nobody to beat for: end, clearing the flag under the same lock, so that a
            // `serve` after this sees it clear and starts a new sweep.
            serving.sweeping = false;
            sweeping.0 = None;
            return;
        }
        shared.heartbeat.advance();
        for queue in serving.queues.iter() {
            queue.wake_receiver();
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            let i = i as usize;
            let mut serving = lock(&self.shared.serving);
            let queue = serving.queues.remove(i);
            drop(serving);
            drop(queue);
        }
        self.shared.open.send_modify(|n| *n -= 1);
    }
}
