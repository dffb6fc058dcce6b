//! Limits and policies of the bundled server.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::queue::QueueConfig;
use crate::server::auth::{Admission, Rejection, UpgradeRequest};
use crate::server::origin::OriginPolicy;
use crate::server::rate_limit::RateLimit;

/// The auth hook's type: a synchronous decision over the HTTP upgrade request.
pub(crate) type AuthHook =
    Arc<dyn Fn(&UpgradeRequest<'_>) -> Result<Admission, Rejection> + Send + Sync + 'static>;

/// Limits, timeouts and policies of a [`Server`](crate::server::Server).
///
/// Every setting has a default chosen for a server exposed to the internet; raise what your
/// application needs.
///
/// | setting | default |
/// | --- | --- |
/// | [`max_connections`](Self::max_connections) | 10,000 (connections past it get HTTP 503) |
/// | [`handshake_timeout`](Self::handshake_timeout) | 10 s |
/// | [`max_message_size`](Self::max_message_size) | 64 KiB (larger: close 1009) |
/// | [`max_frame_size`](Self::max_frame_size) | 64 KiB (larger: close 1009) |
/// | [`ping_interval`](Self::ping_interval) | 30 s |
/// | [`idle_timeout`](Self::idle_timeout) | 75 s (nothing received for that long: close 1001) |
/// | [`queue`](Self::queue) | [`QueueConfig::default`]: 4,096 messages, 1 MiB, close 1008 on overflow |
/// | Origin ([`same_origin`](Self::same_origin)) | same origin: an `Origin` header must name the request's `Host` (else 403); no `Origin` is allowed |
/// | [`inbound_rate`](Self::inbound_rate) | [`RateLimit::default`]: 50 messages/s, bursts of 100; over it an error frame, then close 1008 |
/// | [`auth`](Self::auth) | none: every client is anonymous |
/// | [`read_buffer_size`](Self::read_buffer_size) | 1 KiB |
/// | [`write_batch`](Self::write_batch) | 256 messages per flush |
/// | [`close_timeout`](Self::close_timeout) | 5 s |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | 10 s |
/// | [`send_buffer_size`](Self::send_buffer_size) | 256 KiB (`SO_SNDBUF` of each accepted connection) |
/// | [`unsent_limit`](Self::unsent_limit) | 16 KiB (`TCP_NOTSENT_LOWAT` of each accepted connection, Linux) |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nucleus_stream::QueueConfig;
/// use nucleus_stream::server::{Admission, Rejection, ServerConfig};
///
/// let config = ServerConfig::default()
///     .max_connections(50_000)
///     .max_message_size(256 * 1024)
///     .ping_interval(Duration::from_secs(20))
///     .idle_timeout(Duration::from_secs(45))
///     .queue(QueueConfig::default().max_messages(1024))
///     .allowed_origins(["https://example.com"])
///     .auth(|req| match req.query_param("token") {
///         Some("secret") => Ok(Admission::user("alice").with_metadata("plan", "pro")),
///         _ => Err(Rejection::unauthorized()),
///     });
/// assert_eq!(config.message_size_limit(), 256 * 1024);
/// assert_eq!(config.queue_config().message_limit(), 1024);
/// assert!(config.has_auth());
/// assert_eq!(config.origins().unwrap().collect::<Vec<_>>(), ["https://example.com"]);
/// ```
#[derive(Clone)]
pub struct ServerConfig {
    pub(crate) max_connections: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) max_frame_size: usize,
    pub(crate) ping_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) queue: QueueConfig,
    pub(crate) origins: OriginPolicy,
    pub(crate) inbound_rate: Option<RateLimit>,
    pub(crate) auth: Option<AuthHook>,
    pub(crate) read_buffer_size: usize,
    pub(crate) write_batch: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) write_late: bool,
    pub(crate) coalesce_below: usize,
    pub(crate) send_buffer_size: Option<usize>,
    pub(crate) unsent_limit: Option<usize>,
}

/// The default `SO_SNDBUF` cap of accepted connections (the kernel doubles it for its own
/// bookkeeping). See [`ServerConfig::send_buffer_size`].
pub(crate) const DEFAULT_SEND_BUFFER: usize = 256 * 1024;

/// The default `TCP_NOTSENT_LOWAT` of accepted connections. See [`ServerConfig::unsent_limit`].
pub(crate) const DEFAULT_UNSENT_LIMIT: usize = 16 * 1024;

/// Payloads shorter than this are copied next to their frame header into the batch's staging
/// buffer; longer ones are written by reference (see `BENCHMARKS.md`, "coalesce or iovec").
pub(crate) const DEFAULT_COALESCE_BELOW: usize = 512;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 64 * 1024,
            max_frame_size: 64 * 1024,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            queue: QueueConfig::default(),
            origins: OriginPolicy::SameOrigin,
            inbound_rate: Some(RateLimit::default()),
            auth: None,
            read_buffer_size: 1024,
            write_batch: 256,
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            write_late: false,
            coalesce_below: DEFAULT_COALESCE_BELOW,
            send_buffer_size: Some(DEFAULT_SEND_BUFFER),
            unsent_limit: Some(DEFAULT_UNSENT_LIMIT),
        }
    }
}

impl ServerConfig {
    /// Most simultaneous connections, counting those still in their handshake (at least 1).
    /// A connection past the limit is answered HTTP 503 and closed; if many such arrive at
    /// once, those beyond a small number of in-flight refusals are dropped without a reply.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a client has, from the TCP accept, to complete the HTTP upgrade. A client
    /// that has not finished by then is dropped.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Largest accepted message, in bytes, after reassembling fragments (at least 1). A larger
    /// message closes the connection with 1009 (message too big).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes.max(1);
        self
    }

    /// Largest accepted single frame payload, in bytes (at least 1). A larger frame closes the
    /// connection with 1009.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes.max(1);
        self
    }

    /// Sets both [`max_message_size`](Self::max_message_size) and
    /// [`max_frame_size`](Self::max_frame_size).
    pub fn max_size(self, bytes: usize) -> Self {
        self.max_message_size(bytes).max_frame_size(bytes)
    }

    /// How often the server pings each client (at least 1 ms). Pings keep middleboxes from
    /// dropping quiet connections, and a live client's pong counts as activity.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// A client from which nothing (no message, ping, pong or close) has arrived for this
    /// long is closed with 1001 (at least 1 ms). Keep it above the ping interval plus a round
    /// trip, so that live clients answering pings are never closed.
    ///
    /// One sweep per service checks every connection, every half of the shorter of this and
    /// the ping interval: a silent client is closed after at least this long and at most
    /// one such period later.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Bounds and overflow policy of each connection's outbound queue. Under
    /// [`OverflowPolicy::Disconnect`](crate::OverflowPolicy::Disconnect) (the default) a client
    /// whose queue overflows is a slow consumer: it is closed with 1008 ("slow consumer") and
    /// its backlog is discarded, while every other client keeps receiving.
    pub fn queue(mut self, queue: QueueConfig) -> Self {
        self.queue = queue;
        self
    }

    /// Accept only these `Origin` header values (exact, ASCII case-insensitive match, for
    /// example `"https://example.com"`) instead of the same-origin default; any other Origin
    /// gets HTTP 403 before the upgrade. Requests without an `Origin` header (non-browser
    /// clients; browsers always send it) are not affected: use [`auth`](Self::auth) to
    /// authenticate those.
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list: Vec<Box<str>> = origins
            .into_iter()
            .map(|o| o.into().into_boxed_str())
            .collect();
        self.origins = OriginPolicy::AllowList(list.into());
        self
    }

    /// Accept any Origin. Only for servers that authenticate every connection by something a
    /// browser does not attach by itself (a token in the URL or a header, not a cookie):
    /// otherwise any web page can open a connection with the user's cookies.
    pub fn any_origin(mut self) -> Self {
        self.origins = OriginPolicy::Any;
        self
    }

    /// The default Origin rule: an upgrade that carries an `Origin` header is accepted only
    /// if the Origin's `host[:port]` is the request's `Host` (a port left out is the scheme's
    /// default); others get HTTP 403. Requests without an `Origin` are accepted (see
    /// [`allowed_origins`](Self::allowed_origins)). Behind a proxy that rewrites `Host`, use
    /// an allow-list.
    pub fn same_origin(mut self) -> Self {
        self.origins = OriginPolicy::SameOrigin;
        self
    }

    /// The inbound rate limit of each connection (text and binary messages), or `None` for no
    /// limit. Over the limit a message is dropped and answered with an error frame; a client
    /// that keeps on is closed with 1008. See [`RateLimit`] for the default.
    pub fn inbound_rate(mut self, limit: Option<RateLimit>) -> Self {
        self.inbound_rate = limit;
        self
    }

    /// The auth hook: called with each upgrade request (after the Origin check) and answers
    /// [`Admission`] — the connection opens, as [`WebSocket::authenticated`](crate::WebSocket::authenticated)
    /// when the admission names a user, with its metadata — or [`Rejection`], whose HTTP status
    /// is sent instead of the upgrade.
    ///
    /// The hook runs on the connection's task; keep it quick (a token check, a lookup in
    /// memory).
    pub fn auth<F>(mut self, hook: F) -> Self
    where
        F: Fn(&UpgradeRequest<'_>) -> Result<Admission, Rejection> + Send + Sync + 'static,
    {
        self.auth = Some(Arc::new(hook));
        self
    }

    /// Bytes read from the socket at a time when no frame is partly received (at least 64,
    /// at most 4 KiB: that read goes to a buffer on the stack, and only what arrived is kept,
    /// until it is parsed). No read buffer is held while a connection is idle, whatever this
    /// is; the rest of a large frame is read straight into a buffer of the frame's size.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes.max(64);
        self
    }

    /// Most queued messages a connection writes per flush (at least 1). Everything queued, up
    /// to this many, is framed into one buffer and written with one flush.
    pub fn write_batch(mut self, messages: usize) -> Self {
        self.write_batch = messages.max(1);
        self
    }

    /// How long a closing connection waits to deliver its close frame and for the client to
    /// finish the closing handshake before the TCP connection is dropped.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// How long a graceful [`shutdown`](crate::server::ServerHandle::shutdown) may take: every
    /// client gets what was already queued for it and close 1001 at once, and connections
    /// still open at the deadline are dropped (each still unregistered and given its
    /// `on_disconnect`). A task still running half a second past the deadline — a handler
    /// that never returns — is aborted; its socket is unregistered all the same, but its
    /// `on_disconnect` does not run.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The kernel send buffer (`SO_SNDBUF`) of each connection the bundled server accepts,
    /// in bytes; `None` leaves the kernel's autotuning (on Linux up to `tcp_wmem`'s maximum,
    /// 4 MiB by default). Default 256 KiB.
    ///
    /// A client that stops reading can hold, besides its outbound queue ([`queue`](Self::queue)),
    /// whatever the kernel accepted into the socket: with autotuning that is up to 4 MiB per
    /// connection, copied by the server before the queue even starts to fill, so a slow
    /// consumer is noticed late and costs the other connections that much CPU and memory. With
    /// a cap the backlog stays in the bounded queue, and the slow-consumer policy (close 1008)
    /// applies after about `queue` + this many bytes. 256 KiB keeps a loopback or LAN link at
    /// full speed; a single high-latency, high-bandwidth client may need more (a connection's
    /// throughput is at most the buffer per round trip). Streams handed to
    /// [`StreamService::serve_upgraded`](crate::server::StreamService::serve_upgraded) are not
    /// touched: their owner sets their options.
    pub fn send_buffer_size(mut self, bytes: Option<usize>) -> Self {
        self.send_buffer_size = bytes.map(|b| b.max(4096));
        self
    }

    /// The most bytes the kernel holds *unsent* for each connection the bundled server
    /// accepts (`TCP_NOTSENT_LOWAT`, Linux and Android; ignored elsewhere); `None` leaves the
    /// system's setting (`net.ipv4.tcp_notsent_lowat`, unlimited by default). Default 16 KiB.
    ///
    /// Unlike [`send_buffer_size`](Self::send_buffer_size), which bounds what is unsent and
    /// what is in flight together, this bounds only what waits for the peer's receive window:
    /// a client that reads keeps its whole send buffer for data in flight, and a client that
    /// stops reading takes about this much (plus one socket buffer segment) before its
    /// socket stops accepting writes and its messages wait in the bounded queue as shared
    /// handles. Measured with 100 non-readers among 100 readers (4 KiB messages, 500/s): the
    /// readers' slow phase at the start, while the non-readers' sockets fill, shrank from
    /// about 200 ms to about 60 ms (`BENCHMARKS.md`). 16 KiB is what HTTP/2 servers use
    /// for the same reason. Streams handed to
    /// [`StreamService::serve_upgraded`](crate::server::StreamService::serve_upgraded) are not
    /// touched.
    pub fn unsent_limit(mut self, bytes: Option<usize>) -> Self {
        self.unsent_limit = bytes;
        self
    }

    /// Measurement knob (not a stable API): whether the writer yields once to the runtime
    /// (`tokio::task::yield_now`) before taking queued messages. Off by default: measured,
    /// it cuts deliveries per `writev` from 29 to 4.9 in the one-room case (BENCHMARKS.md).
    #[doc(hidden)]
    pub fn write_late(mut self, on: bool) -> Self {
        self.write_late = on;
        self
    }

    /// Measurement knob (not a stable API): payloads shorter than this many bytes are copied
    /// into the batch's staging buffer, longer ones written by reference (default 512).
    #[doc(hidden)]
    pub fn coalesce_below(mut self, bytes: usize) -> Self {
        self.coalesce_below = bytes;
        self
    }

    // Readers. Setters are builder methods named after the setting (`max_connections(n)`),
    // so a reader cannot share the name; each reader is named for what it returns, without a
    // `get_` prefix (the crate's convention, `docs/design.md` "Configuration").

    /// The connection limit ([`max_connections`](Self::max_connections)).
    pub fn connection_limit(&self) -> usize {
        self.max_connections
    }

    /// How long a handshake may take ([`handshake_timeout`](Self::handshake_timeout)).
    pub fn handshake_limit(&self) -> Duration {
        self.handshake_timeout
    }

    /// The message size limit in bytes ([`max_message_size`](Self::max_message_size)).
    pub fn message_size_limit(&self) -> usize {
        self.max_message_size
    }

    /// The frame size limit in bytes ([`max_frame_size`](Self::max_frame_size)).
    pub fn frame_size_limit(&self) -> usize {
        self.max_frame_size
    }

    /// The time between pings ([`ping_interval`](Self::ping_interval)).
    pub fn ping_period(&self) -> Duration {
        self.ping_interval
    }

    /// How long a connection may receive nothing ([`idle_timeout`](Self::idle_timeout)).
    pub fn idle_limit(&self) -> Duration {
        self.idle_timeout
    }

    /// Each connection's outbound queue configuration ([`queue`](Self::queue)).
    pub fn queue_config(&self) -> QueueConfig {
        self.queue
    }

    /// The accepted `Origin` values when an allow-list is set
    /// ([`allowed_origins`](Self::allowed_origins)); `None` under the same-origin default or
    /// [`any_origin`](Self::any_origin) (see [`origin_policy`](Self::origin_policy)).
    pub fn origins(&self) -> Option<impl Iterator<Item = &str>> {
        match &self.origins {
            OriginPolicy::AllowList(list) => Some(list.iter().map(|o| &**o)),
            _ => None,
        }
    }

    /// The Origin rule in force ([`same_origin`](Self::same_origin),
    /// [`allowed_origins`](Self::allowed_origins), [`any_origin`](Self::any_origin)).
    pub fn origin_policy(&self) -> &OriginPolicy {
        &self.origins
    }

    /// Whether an auth hook is installed ([`auth`](Self::auth)).
    pub fn has_auth(&self) -> bool {
        self.auth.is_some()
    }

    /// The read buffer size in bytes ([`read_buffer_size`](Self::read_buffer_size)).
    pub fn read_buffer_len(&self) -> usize {
        self.read_buffer_size
    }

    /// Messages written per flush ([`write_batch`](Self::write_batch)).
    pub fn write_batch_len(&self) -> usize {
        self.write_batch
    }

    /// How long a close handshake may take ([`close_timeout`](Self::close_timeout)).
    pub fn close_limit(&self) -> Duration {
        self.close_timeout
    }

    /// The shutdown deadline ([`shutdown_timeout`](Self::shutdown_timeout)).
    pub fn shutdown_limit(&self) -> Duration {
        self.shutdown_timeout
    }

    /// The `SO_SNDBUF` cap of accepted connections ([`send_buffer_size`](Self::send_buffer_size)).
    pub fn send_buffer_limit(&self) -> Option<usize> {
        self.send_buffer_size
    }

    /// The Origin rule over an upgrade's `Origin` and `Host` header values.
    pub(crate) fn origin_allowed(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> bool {
        self.origins.allows(origin, host)
    }

    /// The inbound rate limit, if any ([`inbound_rate`](Self::inbound_rate)).
    pub fn inbound_rate_limit(&self) -> Option<&RateLimit> {
        self.inbound_rate.as_ref()
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("max_connections", &self.max_connections)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("max_frame_size", &self.max_frame_size)
            .field("ping_interval", &self.ping_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("queue", &self.queue)
            .field("origins", &self.origins)
            .field("inbound_rate", &self.inbound_rate)
            .field("auth", &self.auth.as_ref().map(|_| "<hook>"))
            .field("read_buffer_size", &self.read_buffer_size)
            .field("write_batch", &self.write_batch)
            .field("close_timeout", &self.close_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("write_late", &self.write_late)
            .field("coalesce_below", &self.coalesce_below)
            .field("send_buffer_size", &self.send_buffer_size)
            .field("unsent_limit", &self.unsent_limit)
            .finish()
    }
}
