//! The bundled WebSocket server: a [`StreamHub`] and a [`StreamHandler`] over tokio, with
//! the crate's own WebSocket codec (feature `server`, on by default).
//!
//! Two entry points share one connection loop:
//!
//! - [`Server`] binds (or takes a `TcpListener`), spawns its accept loop on the current tokio
//!   runtime and returns a [`ServerHandle`];
//! - [`StreamService::serve_upgraded`] runs the same connection on a byte stream that another
//!   stack has already upgraded (hyper, axum, a TLS acceptor, a test). A `Server` is an accept
//!   loop and an HTTP upgrade in front of a `StreamService`, and shuts down through it.
//!
//! Each connection accepted by a [`Server`]:
//!
//! 1. completes the HTTP upgrade within [`handshake_timeout`](ServerConfig::handshake_timeout):
//!    an `Origin` of another site gets 403 (same-origin by default), the [auth hook](ServerConfig::auth) may refuse with any
//!    status, and past [`max_connections`](ServerConfig::max_connections) the answer is 503;
//! 2. is registered in the hub under a server-generated id (as its user, if the hook named
//!    one) and [`on_connect`](StreamHandler::on_connect) runs;
//! 3. then one task serves it: text and binary messages go to
//!    [`on_message`](StreamHandler::on_message) in order (payloads are `Bytes` cut from the
//!    read buffer, not copied), pings are answered, and everything queued for it is written
//!    in batches: one `writev` of shared payload handles per batch, never a per-connection
//!    copy of a broadcast; an idle connection holds no read or write buffer;
//! 4. on any end it is unregistered, then
//!    [`on_disconnect_with`](StreamHandler::on_disconnect_with) runs exactly once with the
//!    socket, its rooms and the [`DisconnectReason`](crate::DisconnectReason). The task ends
//!    with the connection.
//!
//! On Linux the accepted sockets are not registered with tokio's reactor but with an epoll
//! instance of the server's own, drained by one task: a 32-byte readiness cell per socket
//! instead of tokio's 256-byte registration (`src/server/reactor.rs`). Streams handed to
//! [`StreamService::serve_upgraded`] keep whatever readiness source they come with.
//!
//! The wire path (its reader, writer and the measurements behind each choice) is described in
//! `docs/design.md`, "Bytes on the wire", and `BENCHMARKS.md`, "Wire path".
//!
//! # Close codes
//!
//! | cause | code |
//! | --- | --- |
//! | message or frame over the size limit | 1009 |
//! | text that is not UTF-8 | 1007 |
//! | protocol violation (unmasked frame, reserved bits or opcode, bad fragmentation, …) | 1002 |
//! | slow consumer: the outbound queue overflowed under [`OverflowPolicy::Disconnect`](crate::OverflowPolicy::Disconnect) | 1008, backlog discarded |
//! | nothing received within the idle timeout | 1001 |
//! | graceful shutdown | 1001 |
//! | the application unregistered the socket or closed its queue | 1000, after the backlog |
//! | over the [inbound rate limit](ServerConfig::inbound_rate) and still sending | 1008 ("rate limit exceeded"), after error frames |
//!
//! # Examples
//!
//! ```
//! use nucleus_stream::server::{Server, ServerConfig};
//! use nucleus_stream::{async_trait, SocketMessage, StreamHandler, StreamHub, WebSocket};
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl StreamHandler for Echo {
//!     async fn on_message(&self, hub: &StreamHub, socket: &WebSocket, msg: SocketMessage) {
//!         hub.send_to(&socket.id, msg).await.ok();
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let server = Server::new(StreamHub::new(), Echo)
//!     .config(ServerConfig::default().max_connections(1_000))
//!     .bind("127.0.0.1:0")
//!     .await?;
//! println!("listening on ws://{}", server.local_addr());
//! server.shutdown();
//! server.stopped().await;
//! # Ok::<(), std::io::Error>(())
//! # }).unwrap();
//! ```

pub(crate) mod admission;
mod auth;
mod config;
mod connection;
mod frame;
mod heartbeat;
mod origin;
mod outbox;
mod rate_limit;
#[cfg(target_os = "linux")]
mod reactor;
mod service;
mod slot_list;
mod upgrade;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::OptionFuture;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::Notify;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tracing::{debug, info, warn};

use crate::handler::StreamHandler;
use crate::hub::StreamHub;
use crate::sync::{AtomicUsize, Mutex, Ordering, lock};
use slot_list::SlotList;

pub use auth::{Admission, Rejection, UpgradeRequest};
pub use config::ServerConfig;
pub use origin::OriginPolicy;
pub use rate_limit::RateLimit;
use service::ABORT_GRACE;
pub use service::StreamService;

/// Over-limit connections answered with 503 at the same time; beyond this they are dropped
/// without a reply (a flood must not buy a task per connection).
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// Builds and starts a server.
///
/// # Examples
///
/// See the [module documentation](self).
pub struct Server {
    hub: StreamHub,
    handler: Arc<dyn StreamHandler>,
    config: ServerConfig,
}

impl Server {
    /// A server for `hub` whose connections call `handler`, with the default
    /// [`ServerConfig`].
    pub fn new<H: StreamHandler>(hub: StreamHub, handler: H) -> Self {
        Self::with_shared_handler(hub, Arc::new(handler))
    }

    /// Like [`new`](Self::new), with a handler you keep a reference to.
    pub fn with_shared_handler(hub: StreamHub, handler: Arc<dyn StreamHandler>) -> Self {
        Self {
            hub,
            handler,
            config: ServerConfig::default(),
        }
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Binds `addr` (port 0 picks a free port; read it from
    /// [`ServerHandle::local_addr`]) and starts serving.
    ///
    /// # Errors
    ///
    /// The bind error, if the address cannot be bound.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime (the accept loop is spawned on it).
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<ServerHandle> {
        let listener = TcpListener::bind(addr).await?;
        self.listen(listener)
    }

    /// Starts serving on an already bound listener.
    ///
    /// # Errors
    ///
    /// If the listener's local address cannot be read.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime (the accept loop is spawned on it).
    pub fn listen(self, listener: TcpListener) -> io::Result<ServerHandle> {
        let local_addr = listener.local_addr()?;
        let service = StreamService::with_shared_handler(self.hub, self.handler, self.config);
        let (done_tx, done) = watch::channel(false);
        let shared = Arc::new(ServerShared::new(service));
        let listener = Listener::new(listener)?;
        tokio::spawn(accept_loop(listener, Arc::clone(&shared), done_tx));
        debug!(%local_addr, "server listening");
        Ok(ServerHandle {
            local_addr,
            shared,
            done,
        })
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A running server: its address, its connection count, and the way to stop it.
///
/// Cloning gives another handle to the same server. Dropping every handle does not stop the
/// server; [`shutdown`](Self::shutdown) does.
#[derive(Clone)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    shared: Arc<ServerShared>,
    done: watch::Receiver<bool>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The hub the server registers its connections in.
    pub fn hub(&self) -> &StreamHub {
        self.shared.service.hub()
    }

    /// The service that runs this server's connections (share it to serve upgraded streams
    /// from another stack under the same shutdown).
    pub fn service(&self) -> &StreamService {
        &self.shared.service
    }

    /// Connections now open or in their handshake.
    pub fn connections(&self) -> usize {
        // ORDERING: an instantaneous statistic.
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Begins a graceful shutdown (later calls do nothing): the listener closes, every client
    /// gets what is already queued for it, then close 1001, and each connection ends when the
    /// client completes the close or at the deadline
    /// ([`shutdown_timeout`](ServerConfig::shutdown_timeout)), whichever comes first.
    /// Await [`stopped`](Self::stopped) to know when every connection is gone.
    pub fn shutdown(&self) {
        self.shared.service.shutdown();
    }

    /// Resolves once the server has stopped: after a [`shutdown`](Self::shutdown), when the
    /// listener is closed and every connection has ended (each one unregistered and its
    /// `on_disconnect` run), at the latest shortly after the deadline.
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        // `Err` means the accept loop is gone, which also means stopped.
        let _ = done.wait_for(|d| *d).await;
    }

    /// [`shutdown`](Self::shutdown), then [`stopped`](Self::stopped).
    pub async fn shutdown_and_wait(self) {
        self.shutdown();
        self.stopped().await;
    }

    /// Whether the server has stopped.
    pub fn is_stopped(&self) -> bool {
        *self.done.borrow()
    }
}
/// Awaiting a handle is [`stopped`](ServerHandle::stopped): it resolves once the server has
/// shut down and every connection is gone.
///
/// # Examples
///
/// ```
/// # use nucleus_stream::{async_trait, SocketMessage, StreamHandler, StreamHub, WebSocket};
/// # struct Quiet;
/// # #[async_trait]
/// # impl StreamHandler for Quiet {
/// #     async fn on_message(&self, _: &StreamHub, _: &WebSocket, _: SocketMessage) {}
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let server = nucleus_stream::server::Server::new(StreamHub::new(), Quiet)
///     .bind("127.0.0.1:0")
///     .await?;
/// let stopper = server.clone();
/// tokio::spawn(async move { stopper.shutdown() });
/// server.await;
/// # Ok::<(), std::io::Error>(())
/// # }).unwrap();
/// ```
impl std::future::IntoFuture for ServerHandle {
    type Output = ();
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.stopped().await })
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.connections())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

/// What the accept loop and the handles share.
struct ServerShared {
    service: StreamService,
    /// Connections accepted and not yet ended (handshaking or open). Incremented by the
    /// accept loop before spawning, decremented by the connection's guard when its task ends.
    active: AtomicUsize,
    /// Over-limit connections being answered 503 now. Same discipline as `active`.
    refusing: AtomicUsize,
    /// The accepted connections' tasks, so that the shutdown can drop those still running
    /// past its deadline: one abort handle per task (8 bytes) instead of a `JoinSet` entry
    /// (a 56-byte allocation per connection, measured with massif).
    tasks: Mutex<SlotList<TaskSlot>>,
    /// Notified when `active` drops to zero.
    drained: Notify,
}

/// What the slot of an accepted connection's task holds. The task's [`CountGuard`] frees
/// its slot when the task ends; the accept loop stores the handle after spawning it: either
/// may come first.
enum TaskSlot {
    /// The task is being spawned: its handle is not stored yet.
    Spawning,
    Running(AbortHandle),
    /// The task ended before its handle was stored; the spawner frees the slot.
    Ended,
}

impl ServerShared {
    /// The accept loop's state for `service`: no connection yet.
    fn new(service: StreamService) -> Self {
        Self {
            service,
            active: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            tasks: Mutex::new(SlotList::default()),
            drained: Notify::new(),
        }
    }

    /// A new slot, `Spawning`.
    fn reserve_slot(&self) -> usize {
        lock(&self.tasks).insert(TaskSlot::Spawning)
    }

    /// Stores the spawned task's handle in slot `i`, or frees it if the task already ended.
    fn spawned(&self, i: usize, handle: AbortHandle) {
        let mut tasks = lock(&self.tasks);
        match tasks.get_mut(i) {
            Some(TaskSlot::Ended) => drop(tasks.remove(i)),
            Some(slot) => *slot = TaskSlot::Running(handle),
            None => {}
        }
    }

    /// The task of slot `i` ended.
    fn ended(&self, i: usize) {
        let mut tasks = lock(&self.tasks);
        match tasks.get_mut(i) {
            Some(slot @ TaskSlot::Spawning) => *slot = TaskSlot::Ended,
            _ => drop(tasks.remove(i)),
        }
    }

    /// Aborts every running task; returns how many.
    fn abort_all(&self) -> usize {
        let tasks = lock(&self.tasks);
        let mut n = 0;
        for slot in tasks.iter() {
            if let TaskSlot::Running(handle) = slot {
                handle.abort();
                n += 1;
            }
        }
        n
    }

    /// Resolves once no accepted connection is left.
    async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // ORDERING: the guard decrements, then notifies (`Notify` takes a lock): a
            // decrement this load misses is followed by a notification the enabled
            // `notified` receives.
            if self.active.load(Ordering::Relaxed) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Decrements a counter (and frees the task's slot) when a task ends, however it ends.
///
/// Two words: it lives in every open connection's task for the connection's whole life (the
/// task's future must stay within the 280 bytes of a 384-byte tokio task cell: see the test
/// `an_accepted_connection_task_fits_a_384_byte_task_cell`).
struct CountGuard {
    shared: Arc<ServerShared>,
    /// The task's slot in `ServerShared::tasks`, or [`CountGuard::REFUSAL`] for a refusal's
    /// task (counted in `refusing`, no slot).
    slot: usize,
}

impl CountGuard {
    /// The `slot` of a refusal's guard (no slot index reaches it: a `Vec`'s length stays below
    /// `isize::MAX`).
    const REFUSAL: usize = usize::MAX;
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        let refusal = self.slot == Self::REFUSAL;
        let counter = if refusal {
            &self.shared.refusing
        } else {
            self.shared.ended(self.slot);
            &self.shared.active
        };
        // ORDERING: a counter whose readers compare it to a limit or to zero; no data hangs
        // on it (the shutdown's wait for zero is woken through `drained`, a lock).
        if counter.fetch_sub(1, Ordering::Relaxed) == 1 && !refusal {
            self.shared.drained.notify_waiters();
        }
    }
}

/// An accepted connection's stream: on Linux a socket of the server's own
/// [reactor](reactor) (a 32-byte readiness cell instead of tokio's 256-byte registration).
#[cfg(target_os = "linux")]
type Conn = reactor::ReactorStream;
/// An accepted connection's stream.
#[cfg(not(target_os = "linux"))]
type Conn = tokio::net::TcpStream;

/// The listening socket, with (on Linux) the reactor its connections are registered on.
struct Listener {
    #[cfg(target_os = "linux")]
    io: reactor::ReactorListener,
    #[cfg(not(target_os = "linux"))]
    io: TcpListener,
    /// Field order: the listener closes before the reactor stops.
    #[cfg(target_os = "linux")]
    _reactor: reactor::Reactor,
}

impl Listener {
    #[cfg(target_os = "linux")]
    fn new(listener: TcpListener) -> io::Result<Self> {
        let reactor = reactor::Reactor::new()?;
        let io = reactor.listener(listener.into_std()?)?;
        Ok(Self {
            io,
            _reactor: reactor,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn new(listener: TcpListener) -> io::Result<Self> {
        Ok(Self { io: listener })
    }

    async fn accept(&self) -> io::Result<(Conn, SocketAddr)> {
        self.io.accept().await
    }
}

async fn accept_loop(listener: Listener, shared: Arc<ServerShared>, done: watch::Sender<bool>) {
    let mut shutdown = shared.service.shared().shutdown.subscribe();
    loop {
        if shutdown.borrow_and_update().is_some() {
            break;
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => admit(&shared, stream, peer),
                Err(e) => {
                    // Typically EMFILE/ENFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    info!(
        // ORDERING: a statistic.
        connections = shared.active.load(Ordering::Relaxed),
        "server shutting down: listener closed"
    );
    // Each connection closes itself by the deadline; handshakes are abandoned at once. A
    // connection still running a grace period past the deadline (a handler that never
    // returns) is dropped, which unregisters it (as `StreamService::serve_upgraded` does for
    // each of its futures; here one timer serves all connections).
    let deadline = (*shutdown.borrow()).unwrap_or_else(Instant::now) + ABORT_GRACE;
    if timeout_at(deadline, shared.drained()).await.is_err() {
        // Every task's handle is stored: the accept loop stores it right after spawning, and
        // it spawns nothing more.
        let aborted = shared.abort_all();
        warn!(
            connections = aborted,
            "connections still running past the shutdown deadline: dropped"
        );
        shared.drained().await;
    }
    shared.service.idle().await;
    info!("server stopped");
    done.send_replace(true);
}

fn admit(shared: &Arc<ServerShared>, stream: Conn, peer: SocketAddr) {
    let config = shared.service.config();
    // ORDERING: the counter itself is the only shared state; exactness comes from the RMW.
    let active = shared.active.fetch_add(1, Ordering::Relaxed);
    if active >= config.max_connections {
        // ORDERING: as above.
        shared.active.fetch_sub(1, Ordering::Relaxed);
        // ORDERING: as above.
        let refusing = shared.refusing.fetch_add(1, Ordering::Relaxed);
        let guard = CountGuard {
            shared: Arc::clone(shared),
            slot: CountGuard::REFUSAL,
        };
        if refusing >= MAX_REFUSALS_IN_FLIGHT {
            warn!(%peer, "connection dropped: at max_connections and refusals");
            drop(stream);
            return;
        }
        let handshake_timeout = config.handshake_timeout;
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let _guard = guard;
            let mut stream = stream;
            let refuse = upgrade::upgrade(&mut stream, shared.service.config(), peer, true);
            let _ = timeout(handshake_timeout, refuse).await;
            warn!(%peer, "connection refused with 503: at max_connections");
        });
        return;
    }
    let slot = shared.reserve_slot();
    let guard = CountGuard {
        shared: Arc::clone(shared),
        slot,
    };
    let task = tokio::spawn(connection_task(shared, stream, peer, guard));
    shared.spawned(slot, task.abort_handle());
}

/// An accepted connection's task: its handshake, then, if it upgraded, the connection.
///
/// One task: the handshake's state is boxed (freed once it is done), the connection's is
/// held inline after it, so an open connection's task is one allocation of about its own
/// size. Combinators rather than an `async` block, which would keep the returned connection
/// future and the one it awaits side by side (measured: a 1,667-byte task). (Spawning the
/// connection as a second task from the handshake's was worse too: 2,509 against 1,955 B
/// per idle connection.)
fn connection_task(
    shared: &Arc<ServerShared>,
    stream: Conn,
    peer: SocketAddr,
    guard: CountGuard,
) -> impl Future<Output = ()> + Send + 'static + use<> {
    Box::pin(handshake(Arc::clone(shared), stream, peer))
        .then(OptionFuture::from)
        .map(move |_| drop(guard))
}

/// One accepted TCP connection's upgrade (bounded by the handshake timeout, abandoned on
/// shutdown); on success, the service's connection future for it.
async fn handshake(
    shared: Arc<ServerShared>,
    mut stream: Conn,
    peer: SocketAddr,
) -> Option<impl Future<Output = ()> + Send + 'static + use<>> {
    let service = &shared.service;
    let socket = socket2::SockRef::from(&stream);
    let _ = socket.set_tcp_nodelay(true);
    let config = service.config();
    if let Some(bytes) = config.send_buffer_size {
        // Best effort, as the no-delay option: a refused option leaves the kernel's default.
        let _ = socket.set_send_buffer_size(bytes);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(bytes) = config.unsent_limit {
        // Best effort as well: an older kernel without the option keeps its default.
        let lowat = u32::try_from(bytes).unwrap_or(u32::MAX);
        let _ = socket.set_tcp_notsent_lowat(lowat);
    }
    let mut shutdown = service.shared().shutdown.subscribe();
    let handshake = timeout(
        config.handshake_timeout,
        upgrade::upgrade(&mut stream, config, peer, false),
    );
    let outcome = tokio::select! {
        outcome = handshake => outcome,
        _ = shutdown.wait_for(Option::is_some) => return None,
    };
    match outcome {
        Ok(upgrade::Outcome::Upgraded {
            admission,
            leftover,
        }) => Some(service.connection(stream, leftover, admission, Some(peer))),
        Ok(upgrade::Outcome::Refused(status)) => {
            debug!(%peer, %status, "upgrade refused");
            None
        }
        Ok(upgrade::Outcome::Failed(why)) => {
            warn!(%peer, why, "handshake failed");
            None
        }
        Err(_) => {
            warn!(%peer, "handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::SocketMessage;
    use crate::socket::WebSocket;

    struct Quiet;

    #[async_trait::async_trait]
    impl StreamHandler for Quiet {
        async fn on_message(&self, _: &StreamHub, _: &WebSocket, _: SocketMessage) {}
    }

    /// tokio's task cell is its 32-byte header, the scheduler handle and task id (16), the
    /// future's stage (the future plus an 8-byte tag) and a 48-byte trailer, in 128-byte
    /// steps: a future of at most 280 bytes makes a 384-byte cell, 281 a 512-byte one (RSS
    /// per idle connection, 10,000 of them, 3 interleaved pairs: 1,210 -> 1,094 B when the
    /// future went from 392 to 280 bytes).
    const LARGEST_FUTURE_IN_A_384_BYTE_CELL: usize = 384 - 32 - 16 - 8 - 48;

    #[tokio::test]
    async fn an_accepted_connection_task_fits_a_384_byte_task_cell() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = Listener::new(listener).unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let service = StreamService::with_shared_handler(
            StreamHub::new(),
            Arc::new(Quiet),
            ServerConfig::default(),
        );
        let shared = Arc::new(ServerShared::new(service));
        // ORDERING: one thread.
        shared.active.fetch_add(1, Ordering::Relaxed);
        let slot = shared.reserve_slot();
        let guard = CountGuard {
            shared: Arc::clone(&shared),
            slot,
        };
        let task = connection_task(&shared, stream, peer, guard);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= LARGEST_FUTURE_IN_A_384_BYTE_CELL,
            "an open connection's task future is {size} B: over {LARGEST_FUTURE_IN_A_384_BYTE_CELL} \
             it takes a 512-byte task cell"
        );
        // Dropped unpolled, the guard still ends the count and marks the slot for the
        // spawner (which frees an `Ended` slot when it comes to store the handle).
        drop(task);
        assert_eq!(shared.active.load(Ordering::Relaxed), 0);
        assert!(matches!(
            lock(&shared.tasks).get_mut(slot),
            Some(TaskSlot::Ended)
        ));
        drop(client);
    }
}
