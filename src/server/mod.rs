//! The bundled WebSocket server: a [`StreamHub`] and a [`StreamHandler`] over tokio +
//! tokio-tungstenite (feature `server`, on by default).
//!
//! [`Server`] binds (or takes a `TcpListener`), spawns its accept loop on the current tokio
//! runtime and returns a [`ServerHandle`]. Each accepted connection:
//!
//! 1. completes the HTTP upgrade within [`handshake_timeout`](ServerConfig::handshake_timeout):
//!    an `Origin` of another site gets 403 (same-origin by default), the [auth hook](ServerConfig::auth) may refuse with any
//!    status, and past [`max_connections`](ServerConfig::max_connections) the answer is 503;
//! 2. is registered in the hub under a server-generated id (as its user, if the hook named
//!    one) and [`on_connect`](StreamHandler::on_connect) runs;
//! 3. then one task serves it: text and binary messages go to
//!    [`on_message`](StreamHandler::on_message) in order, pings are answered, and everything
//!    queued for it is written in batches — one flush per batch, not one write per message;
//! 4. on any end it is unregistered, then
//!    [`on_disconnect_with`](StreamHandler::on_disconnect_with) runs exactly once with the
//!    socket, its rooms and the [`DisconnectReason`](crate::DisconnectReason). The task ends
//!    with the connection.
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

mod auth;
mod config;
mod connection;
mod origin;
mod rate_limit;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout_at};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, info, warn};

use crate::handler::StreamHandler;
use crate::hub::StreamHub;
use crate::sync::{AtomicUsize, Ordering};

pub use auth::{Admission, Rejection, UpgradeRequest};
pub use config::ServerConfig;
pub use origin::OriginPolicy;
pub use rate_limit::RateLimit;

/// Over-limit connections answered with 503 at the same time; beyond this they are dropped
/// without a reply (a flood must not buy a task per connection).
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// After the shutdown deadline, how long connection tasks get to finish their last steps
/// (unregister, `on_disconnect`) before they are aborted.
const ABORT_GRACE: Duration = Duration::from_millis(500);

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
        let config = self.config;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer_size)
            // Frames accumulate in the write buffer until the batch's single flush (a batch
            // larger than this is written in pieces of about this size).
            .write_buffer_size(64 * 1024)
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_frame_size));
        let (shutdown, shutdown_rx) = watch::channel(None);
        let (done_tx, done) = watch::channel(false);
        let shared = Arc::new(ServerShared {
            hub: self.hub,
            handler: self.handler,
            config,
            ws_config,
            shutdown,
            active: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
        });
        tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            shutdown_rx,
            done_tx,
        ));
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
        &self.shared.hub
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
        let deadline = Instant::now() + self.shared.config.shutdown_timeout;
        self.shared.shutdown.send_if_modified(|state| {
            if state.is_none() {
                *state = Some(deadline);
                true
            } else {
                false
            }
        });
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

/// What every connection task of one server shares.
pub(crate) struct ServerShared {
    pub(crate) hub: StreamHub,
    pub(crate) handler: Arc<dyn StreamHandler>,
    pub(crate) config: ServerConfig,
    pub(crate) ws_config: WebSocketConfig,
    /// `Some(deadline)` once shutdown has begun.
    pub(crate) shutdown: watch::Sender<Option<Instant>>,
    /// Connections accepted and not yet ended (handshaking or open). Incremented by the
    /// accept loop before spawning, decremented by the connection's guard when its task ends.
    pub(crate) active: AtomicUsize,
    /// Over-limit connections being answered 503 now. Same discipline as `active`.
    pub(crate) refusing: AtomicUsize,
}

/// Decrements a counter when a task ends, however it ends.
struct CountGuard {
    shared: Arc<ServerShared>,
    refusal: bool,
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        let counter = if self.refusal {
            &self.shared.refusing
        } else {
            &self.shared.active
        };
        // ORDERING: a counter whose only reader compares it to a limit; no data hangs on it.
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<ServerShared>,
    mut shutdown: watch::Receiver<Option<Instant>>,
    done: watch::Sender<bool>,
) {
    let mut tasks = JoinSet::new();
    loop {
        if shutdown.borrow_and_update().is_some() {
            break;
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => {}
            Some(result) = tasks.join_next(), if !tasks.is_empty() => log_task_end(result),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => admit(&shared, &mut tasks, stream, peer),
                Err(e) => {
                    // Typically EMFILE/ENFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let deadline = (*shutdown.borrow()).unwrap_or_else(Instant::now);
    info!(
        connections = tasks.len(),
        "server shutting down: listener closed"
    );
    // Connections close themselves by the deadline; the grace covers their last steps
    // (unregister, `on_disconnect`) before anything still running is aborted.
    let abort_at = deadline + ABORT_GRACE;
    while !tasks.is_empty() {
        match timeout_at(abort_at, tasks.join_next()).await {
            Ok(Some(result)) => log_task_end(result),
            Ok(None) => break,
            Err(_) => {
                warn!(
                    connections = tasks.len(),
                    "shutdown deadline passed: aborting the remaining connections"
                );
                tasks.abort_all();
                while let Some(result) = tasks.join_next().await {
                    if let Err(e) = result {
                        if e.is_panic() {
                            warn!(error = %e, "connection task panicked");
                        }
                    }
                }
            }
        }
    }
    info!("server stopped");
    done.send_replace(true);
}

fn log_task_end(result: Result<(), tokio::task::JoinError>) {
    if let Err(e) = result {
        warn!(error = %e, "connection task failed");
    }
}

fn admit(shared: &Arc<ServerShared>, tasks: &mut JoinSet<()>, stream: TcpStream, peer: SocketAddr) {
    // ORDERING: the counter itself is the only shared state; exactness comes from the RMW.
    let active = shared.active.fetch_add(1, Ordering::Relaxed);
    if active >= shared.config.max_connections {
        // ORDERING: as above.
        shared.active.fetch_sub(1, Ordering::Relaxed);
        // ORDERING: as above.
        let refusing = shared.refusing.fetch_add(1, Ordering::Relaxed);
        let guard = CountGuard {
            shared: Arc::clone(shared),
            refusal: true,
        };
        if refusing >= MAX_REFUSALS_IN_FLIGHT {
            warn!(%peer, "connection dropped: at max_connections and refusals");
            drop(stream);
            return;
        }
        let shared = Arc::clone(shared);
        tasks.spawn(async move {
            let _guard = guard;
            connection::refuse(shared, stream, peer).await;
        });
        return;
    }
    let guard = CountGuard {
        shared: Arc::clone(shared),
        refusal: false,
    };
    let shutdown = shared.shutdown.subscribe();
    let shared = Arc::clone(shared);
    tasks.spawn(async move {
        let _guard = guard;
        connection::serve(shared, stream, peer, shutdown).await;
    });
}
