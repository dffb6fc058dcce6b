//! The wire path over real loopback sockets: partial writes through a tiny send buffer,
//! control frames between fragments, UTF-8 split across fragments, bytes pipelined after the
//! upgrade request.

use std::time::Duration;

use crate::support::wire::*;
use nucleus_stream::server::{Admission, ServerConfig, StreamService};
use nucleus_stream::{QueueConfig, SocketMessage, StreamHub};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};

/// Payload `i` of the partial-write test: sizes from 1 byte to ~200 KiB, contents that
/// identify the message and the offset.
fn payload(i: usize) -> Vec<u8> {
    let len = match i % 5 {
        0 => 1,
        1 => 125,
        2 => 126 + i,
        3 => 70_000 + i * 13,
        _ => 200_000 - i,
    };
    (0..len).map(|k| (k * 31 + i * 7) as u8).collect()
}

#[tokio::test]
async fn large_and_small_frames_survive_partial_writes_through_a_tiny_send_buffer() {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, false);
    let config = ServerConfig::default().queue(QueueConfig::default().max_bytes(64 << 20));
    let service = StreamService::with_shared_handler(hub.clone(), rec.clone(), config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let mut c = RawClient::from_stream(stream, "/").await.expect_open();
        c.send_text("ready").await;
        c
    });
    let stream = foreign_upgrade(&listener).await;
    set_send_buffer(&stream, 4096);
    tokio::spawn(service.serve_upgraded(stream, Admission::anonymous(), None));
    let mut c = client.await.unwrap();
    eventually("connected", || rec.connected_ids().len() == 1).await;
    let id = rec.connected_ids()[0].clone();

    const N: usize = 60;
    for i in 0..N {
        hub.send_to(&id, SocketMessage::binary(payload(i)))
            .await
            .unwrap();
    }
    // Read slowly at first, so the server's writes stop part-way through frames.
    for i in 0..N {
        if i < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let frame = c.read_frame().await.expect("a frame");
        assert_eq!(frame.opcode, OP_BINARY);
        assert!(frame.fin);
        assert!(frame.payload == payload(i), "message {i} corrupted");
    }
    service.shutdown();
    assert_eq!(
        within("close", c.read_until_close(|_| {})).await,
        Some(1001)
    );
}

transport_tests! {
#[tokio::test]
async fn a_ping_between_fragments_is_answered_and_utf8_may_split_across_fragments(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let server = start_on(t, &hub, rec.clone(), ServerConfig::default()).await;
    let mut c = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();

    let text = "grüße, €uro — 𝄞 clef";
    let bytes = text.as_bytes();
    // Cut inside 'ü' (2 bytes), inside '€' (3 bytes) and inside '𝄞' (4 bytes).
    let cut1 = text.find('ü').unwrap() + 1;
    let cut2 = text.find('€').unwrap() + 2;
    let cut3 = text.find('𝄞').unwrap() + 3;
    c.send_frame(false, OP_TEXT, &bytes[..cut1]).await;
    c.send_frame(true, OP_PING, b"between").await;
    c.send_frame(false, OP_CONT, &bytes[cut1..cut2]).await;
    c.send_frame(true, OP_PONG, b"unsolicited").await;
    c.send_frame(false, OP_CONT, &bytes[cut2..cut3]).await;
    c.send_frame(true, OP_CONT, &bytes[cut3..]).await;

    let pong = c.read_frame().await.expect("pong");
    assert_eq!((pong.opcode, &pong.payload[..]), (OP_PONG, &b"between"[..]));
    let echo = c.read_frame().await.expect("echo");
    assert_eq!(echo.opcode, OP_TEXT);
    assert_eq!(std::str::from_utf8(&echo.payload).unwrap(), text);
    drop(c);
    server.shutdown_and_wait().await;
}
}

transport_tests! {
#[tokio::test]
async fn invalid_utf8_in_a_middle_fragment_closes_1007_before_the_message_ends(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let server = start_on(t, &hub, rec.clone(), ServerConfig::default()).await;
    let mut c = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    c.send_frame(false, OP_TEXT, "fine ".as_bytes()).await;
    // An overlong encoding of '/', never valid; the final fragment is never sent.
    c.send_frame(false, OP_CONT, &[0xC0, 0xAF]).await;
    assert_eq!(
        within("close", c.read_until_close(|_| {})).await,
        Some(1007)
    );
    eventually("disconnect", || rec.disconnects().len() == 1).await;
    drop(c);
    server.shutdown_and_wait().await;
}
}

transport_tests! {
#[tokio::test]
async fn frames_pipelined_right_after_the_upgrade_request_are_not_lost(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let server = start_on(t, &hub, rec.clone(), ServerConfig::default()).await;
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    // Request and two frames in one write: the server reads them together.
    let mut bytes = upgrade_request("/", &[]);
    bytes.extend(client_frame(true, OP_TEXT, b"one", true));
    bytes.extend(client_frame(true, OP_TEXT, b"two", true));
    stream.write_all(&bytes).await.unwrap();
    let mut c = RawClient::from_open_stream(stream).await.expect_open();
    for want in [&b"one"[..], b"two"] {
        let f = c.read_frame().await.expect("echo");
        assert_eq!(f.payload, want);
    }
    drop(c);
    server.shutdown_and_wait().await;
}
}

/// A stream that counts the writes made to it.
struct CountingWrites {
    inner: tokio::net::TcpStream,
    writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tokio::io::AsyncRead for CountingWrites {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountingWrites {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Messages that arrive in one read are all handled before the connection writes, so the
/// replies they queue for the sender itself (a publisher is a member of its own room) share
/// one write instead of one write each.
#[tokio::test]
async fn replies_to_messages_read_together_share_one_write() {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let service =
        StreamService::with_shared_handler(hub.clone(), rec.clone(), ServerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        RawClient::from_stream(stream, "/").await.expect_open()
    });
    let stream = foreign_upgrade(&listener).await;
    let writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = CountingWrites {
        inner: stream,
        writes: writes.clone(),
    };
    tokio::spawn(service.serve_upgraded(counted, Admission::anonymous(), None));
    let mut c = client.await.unwrap();
    eventually("connected", || rec.connected_ids().len() == 1).await;

    // Twenty messages in one segment: the server reads them with one read.
    const N: usize = 20;
    let burst: Vec<u8> = (0..N)
        .flat_map(|i| client_frame(true, OP_TEXT, format!("m{i:02}").as_bytes(), true))
        .collect();
    c.send_raw(&burst).await;
    for i in 0..N {
        let frame = within("echo", c.read_frame()).await.expect("an echo");
        assert_eq!(frame.payload, format!("m{i:02}").as_bytes());
    }
    let n = writes.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        n <= 2,
        "{N} echoes of one read took {n} writes (one per message when the connection writes between messages)"
    );
    service.shutdown();
}
