//! Loopback clients for server tests: a raw TCP client that speaks WebSocket frames by hand
//! (to send what a well-behaved client never would), a tokio-tungstenite client, and a
//! handler that records what the server told it.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nucleus_stream::server::{Server, ServerConfig, ServerHandle};
use nucleus_stream::{SocketMessage, StreamHandler, StreamHub, WebSocket, async_trait};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for any single wait in a test: a safety net against hangs, never a measurement.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Awaits `f`, failing the test if it takes longer than [`PATIENCE`].
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `cond` until it holds (failing the test after [`PATIENCE`]).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// A client frame: FIN/opcode byte, masked payload length, mask, masked payload.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// The bytes of an upgrade request.
pub fn upgrade_request(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// A WebSocket client that writes and parses frames itself.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A server frame as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OP_CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// How a raw connection attempt went.
pub enum Upgrade {
    /// 101: the connection is a WebSocket now.
    Open(RawClient),
    /// Any other status (and the response body).
    Refused(u16, String),
}

impl Upgrade {
    pub fn expect_open(self) -> RawClient {
        match self {
            Upgrade::Open(c) => c,
            Upgrade::Refused(status, body) => panic!("upgrade refused: {status} {body}"),
        }
    }

    pub fn expect_refused(self) -> u16 {
        match self {
            Upgrade::Open(_) => panic!("upgrade unexpectedly accepted"),
            Upgrade::Refused(status, _) => status,
        }
    }
}

impl RawClient {
    /// Connects and upgrades at `path` with extra headers.
    pub async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Upgrade {
        let stream = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        Self::upgrade(stream, path, headers).await
    }

    /// Connects with a small receive buffer (so that a client that stops reading backs the
    /// server up quickly) and upgrades at `/`.
    pub async fn connect_small_window(addr: SocketAddr) -> RawClient {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = within("tcp connect", socket.connect(addr))
            .await
            .expect("connect");
        Self::upgrade(stream, "/", &[]).await.expect_open()
    }

    /// Upgrades an already connected stream at `path`.
    pub async fn from_stream(stream: TcpStream, path: &str) -> Upgrade {
        Self::upgrade(stream, path, &[]).await
    }

    async fn upgrade(mut stream: TcpStream, path: &str, headers: &[(&str, &str)]) -> Upgrade {
        stream
            .write_all(&upgrade_request(path, headers))
            .await
            .expect("write request");
        Self::from_open_stream(stream).await
    }

    /// Reads the upgrade response on a stream whose request was already sent.
    pub async fn from_open_stream(mut stream: TcpStream) -> Upgrade {
        let mut buf = Vec::new();
        let head_end = within("upgrade response", async {
            loop {
                if let Some(i) = find(&buf, b"\r\n\r\n") {
                    return i + 4;
                }
                let mut chunk = [0u8; 1024];
                let n = stream.read(&mut chunk).await.expect("read response");
                assert!(n > 0, "connection closed before the upgrade response");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let rest = buf[head_end..].to_vec();
        if status == 101 {
            Upgrade::Open(RawClient { stream, buf: rest })
        } else {
            // Read the body until the server closes (bounded).
            let mut body = rest;
            let _ =
                tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut body)).await;
            Upgrade::Refused(status, String::from_utf8_lossy(&body).to_string())
        }
    }

    /// Frees the client's own read buffer (for memory measurements).
    pub fn shrink(&mut self) {
        self.buf.shrink_to_fit();
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends one masked frame.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&client_frame(fin, opcode, payload, true))
            .await;
    }

    /// Sends a masked text message.
    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(true, OP_TEXT, text.as_bytes()).await;
    }

    /// The next frame, or `None` at EOF / reset.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        within("a frame", async {
            loop {
                if let Some((frame, used)) = parse_server_frame(&self.buf) {
                    self.buf.drain(..used);
                    return Some(frame);
                }
                let mut chunk = vec![0u8; 64 * 1024];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
    }

    /// Reads frames until a close frame (returning its code) or EOF (`None`), handing every
    /// other frame to `seen`.
    pub async fn read_until_close(&mut self, mut seen: impl FnMut(&RawFrame)) -> Option<u16> {
        loop {
            let frame = self.read_frame().await?;
            if frame.opcode == OP_CLOSE {
                return Some(frame.close_code().unwrap_or(1005));
            }
            seen(&frame);
        }
    }

    /// Whether the server has closed the TCP connection (reads EOF or reset, discarding
    /// anything still in flight).
    pub async fn wait_eof(&mut self) {
        within("EOF", async {
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses one unmasked server frame from the front of `buf`.
fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, mut at) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return None;
    }
    let payload = buf[at..at + len].to_vec();
    at += len;
    Some((
        RawFrame {
            fin,
            opcode,
            payload,
        },
        at,
    ))
}

pub type WsClient = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A tokio-tungstenite client connected to `ws://addr{path}`.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> WsClient {
    let (ws, _) = within(
        "websocket connect",
        tokio_tungstenite::connect_async(format!("ws://{addr}{path}")),
    )
    .await
    .expect("websocket connect");
    ws
}

/// The next text message (skipping control frames); `None` when the connection ends.
pub async fn next_text(ws: &mut WsClient) -> Option<String> {
    within("a text message", async {
        loop {
            match ws.next().await? {
                Ok(Message::Text(t)) => return Some(t.to_string()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await
}

/// The next message of any data kind; `None` when the connection ends.
pub async fn next_data(ws: &mut WsClient) -> Option<Message> {
    within("a message", async {
        loop {
            match ws.next().await? {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => return Some(m),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await
}

/// Reads until the close frame and returns its code (`None` if the stream ended without one).
pub async fn close_code(ws: &mut WsClient) -> Option<u16> {
    within("a close frame", async {
        loop {
            match ws.next().await? {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await
}

pub async fn send_text(ws: &mut WsClient, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// What a [`Recorder`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Connect {
        id: String,
        user: Option<String>,
        metadata: Vec<(String, String)>,
    },
    Message(String, SocketMessage),
    Disconnect(String),
}

/// A handler that records every callback, optionally joins each socket to a room and
/// optionally echoes messages back.
#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<Seen>>,
    pub changed: Notify,
    pub room: Option<String>,
    pub echo: bool,
}

impl Recorder {
    pub fn new(room: Option<&str>, echo: bool) -> Arc<Self> {
        Arc::new(Self {
            room: room.map(str::to_string),
            echo,
            ..Self::default()
        })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn connected_ids(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Connect { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    pub fn disconnects(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Disconnect(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    fn push(&self, s: Seen) {
        self.seen.lock().unwrap().push(s);
        self.changed.notify_waiters();
    }
}

#[async_trait]
impl StreamHandler for Recorder {
    async fn on_connect(&self, hub: &StreamHub, socket: &WebSocket) {
        if let Some(room) = &self.room {
            hub.join_room(&socket.id, room).await.expect("join");
        }
        self.push(Seen::Connect {
            id: socket.id.to_string(),
            user: socket.user_id().map(str::to_string),
            metadata: socket
                .metadata_entries()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
    }

    async fn on_message(&self, hub: &StreamHub, socket: &WebSocket, msg: SocketMessage) {
        if self.echo {
            hub.send_to(&socket.id, msg.clone()).await.ok();
        }
        self.push(Seen::Message(socket.id.to_string(), msg));
    }

    async fn on_disconnect(&self, hub: &StreamHub, socket_id: &str) {
        assert!(
            !hub.is_registered(socket_id).await,
            "on_disconnect runs after unregister"
        );
        self.push(Seen::Disconnect(socket_id.to_string()));
    }
}

/// Accepts one TCP connection and answers its upgrade request by hand, as a foreign stack
/// would (for `StreamService::serve_upgraded`). Reads the request byte by byte, so whatever
/// the client sends after it stays in the socket for the service to read.
pub async fn foreign_upgrade(listener: &tokio::net::TcpListener) -> TcpStream {
    let (mut stream, _) = within("accept", listener.accept()).await.expect("accept");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.expect("read request");
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).expect("ascii head");
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("key");
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes())
    );
    stream
        .write_all(response.as_bytes())
        .await
        .expect("respond");
    stream
}

/// Shrinks a socket's send buffer (the kernel doubles the value and applies its minimum), so
/// that the server's writes stop part-way and its backlog stays in user space.
pub fn set_send_buffer(stream: &tokio::net::TcpStream, bytes: libc::c_int) {
    // SAFETY: a valid socket descriptor, a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_SNDBUF");
}

/// The stacks a server test runs against: the bundled server, and (feature `axum`) a real
/// axum app serving the hub at every path but `/health` through
/// [`StreamRoute`](nucleus_stream::axum::StreamRoute). Both run the same admission and the
/// same connection loop; the server test modules run each case on every transport here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Bundled,
    #[cfg(feature = "axum")]
    Axum,
}

/// A running server of either transport, with the bundled server's handle API.
#[derive(Clone)]
pub struct TestServer {
    addr: SocketAddr,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Bundled(ServerHandle),
    #[cfg(feature = "axum")]
    Axum {
        route: nucleus_stream::axum::StreamRoute,
        stop: Arc<tokio::sync::watch::Sender<bool>>,
        done: tokio::sync::watch::Receiver<bool>,
    },
}

impl TestServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Open connections: the bundled server counts handshakes in progress too, the axum
    /// route counts upgraded (and upgrading) connections only.
    pub fn connections(&self) -> usize {
        match &self.kind {
            Kind::Bundled(server) => server.connections(),
            #[cfg(feature = "axum")]
            Kind::Axum { route, .. } => route.connections(),
        }
    }

    /// Begins the graceful shutdown: the bundled server's `shutdown`, or the signal given
    /// to axum's `with_graceful_shutdown` (through `StreamRoute::shutdown_on`).
    pub fn shutdown(&self) {
        match &self.kind {
            Kind::Bundled(server) => server.shutdown(),
            #[cfg(feature = "axum")]
            Kind::Axum { stop, .. } => {
                stop.send_replace(true);
            }
        }
    }

    /// Resolves when the server has stopped: listener closed, every connection ended.
    pub async fn stopped(&self) {
        match &self.kind {
            Kind::Bundled(server) => server.stopped().await,
            #[cfg(feature = "axum")]
            Kind::Axum { done, .. } => {
                let mut done = done.clone();
                let _ = done.wait_for(|d| *d).await;
            }
        }
    }

    pub async fn shutdown_and_wait(self) {
        self.shutdown();
        self.stopped().await;
    }

    pub fn is_stopped(&self) -> bool {
        match &self.kind {
            Kind::Bundled(server) => server.is_stopped(),
            #[cfg(feature = "axum")]
            Kind::Axum { done, .. } => *done.borrow(),
        }
    }
}

/// Starts a server of transport `t` on `127.0.0.1:0` with `handler` and `config`.
pub async fn start_on(
    t: Transport,
    hub: &StreamHub,
    handler: Arc<dyn StreamHandler>,
    config: ServerConfig,
) -> TestServer {
    match t {
        Transport::Bundled => {
            let server = Server::with_shared_handler(hub.clone(), handler)
                .config(config)
                .bind("127.0.0.1:0")
                .await
                .expect("bind");
            TestServer {
                addr: server.local_addr(),
                kind: Kind::Bundled(server),
            }
        }
        #[cfg(feature = "axum")]
        Transport::Axum => start_axum(hub, handler, config).await,
    }
}

#[cfg(feature = "axum")]
async fn start_axum(
    hub: &StreamHub,
    handler: Arc<dyn StreamHandler>,
    config: ServerConfig,
) -> TestServer {
    use axum::serve::ListenerExt;
    let route =
        nucleus_stream::axum::StreamRoute::with_shared_handler(hub.clone(), handler, config);
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .fallback_service(route.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let signal = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    let serving = route.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(serving.shutdown_on(signal))
        .await
        .expect("axum::serve");
        // hyper does not wait for upgraded connections: the route does.
        serving.stopped().await;
        done_tx.send_replace(true);
    });
    TestServer {
        addr,
        kind: Kind::Axum {
            route,
            stop: Arc::new(stop),
            done,
        },
    }
}

/// Starts a bundled server on `127.0.0.1:0` with `handler` and `config`.
pub async fn start(hub: &StreamHub, handler: Arc<Recorder>, config: ServerConfig) -> ServerHandle {
    Server::with_shared_handler(hub.clone(), handler)
        .config(config)
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
}

/// Defines each case as a module with one test per transport (`bundled`, and `axum` under
/// the feature): `transport_tests! { #[tokio::test] async fn name(t) { ... } }`, where `t`
/// is the [`Transport`] the body starts its server on (with [`start_on`]).
#[allow(unused_macros)]
macro_rules! transport_tests {
    ($( $(#[$m:meta])* async fn $name:ident($t:ident) $body:block )*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($t: Transport) $body

            $(#[$m])*
            async fn bundled() {
                run(Transport::Bundled).await
            }

            #[cfg(feature = "axum")]
            $(#[$m])*
            async fn axum() {
                run(Transport::Axum).await
            }
        }
    )*};
}
