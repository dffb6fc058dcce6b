//! A client that stops reading is closed as a slow consumer (1008, backlog discarded) while
//! 50 reading clients in the same room receive every message, in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::wire::*;
use futures_util::StreamExt;
use nucleus_stream::server::ServerConfig;
use nucleus_stream::{QueueConfig, SocketMessage, StreamHub};
use tokio_tungstenite::tungstenite::Message;

const READERS: usize = 50;
const ROUND: usize = 16;
const PAYLOAD: usize = 1024;

fn message(seq: usize) -> String {
    format!("{seq:08}{}", "x".repeat(PAYLOAD - 8))
}

transport_tests! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_while_50_readers_get_everything(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(Some("room"), false);
    // Small queues so the non-reader overflows quickly; rounds stay well below the bound.
    let config =
        ServerConfig::default().queue(QueueConfig::default().max_messages(64).max_bytes(48 * 1024));
    let server = start_on(t, &hub, rec.clone(), config).await;
    let addr = server.local_addr();

    // 50 readers, each checking that message k arrives k-th.
    let received: Arc<Vec<AtomicUsize>> =
        Arc::new((0..READERS).map(|_| AtomicUsize::new(0)).collect());
    let out_of_order = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..READERS {
        let mut ws = ws_connect(addr, "/").await;
        let received = received.clone();
        let out_of_order = out_of_order.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    let n = received[r].load(Ordering::SeqCst);
                    if t.as_str() != message(n) {
                        out_of_order.store(true, Ordering::SeqCst);
                    }
                    received[r].store(n + 1, Ordering::SeqCst);
                }
            }
        }));
    }
    // The slow client: handshakes, then never reads (and has a small receive window).
    let mut slow = RawClient::connect_small_window(addr).await;
    eventually("all joined", || rec.connected_ids().len() == READERS + 1).await;

    // Broadcast in rounds, letting the readers catch up after each, until the slow client's
    // queue overflows; then a few more rounds after it is gone.
    let mut sent = 0;
    let mut closed = 0;
    let mut rounds_after_close = 0;
    while rounds_after_close < 5 {
        for _ in 0..ROUND {
            let report = hub
                .broadcast_to_room("room", SocketMessage::text(message(sent)))
                .await
                .unwrap();
            sent += 1;
            closed += report.closed;
        }
        let target = sent;
        let received = received.clone();
        eventually("readers to catch up", move || {
            received.iter().all(|c| c.load(Ordering::SeqCst) == target)
        })
        .await;
        if closed > 0 {
            rounds_after_close += 1;
        }
        assert!(sent < 100_000, "the slow client was never closed");
    }
    assert!(
        !out_of_order.load(Ordering::SeqCst),
        "a reader saw a gap or reordering"
    );
    assert_eq!(
        hub.connection_count().await,
        READERS,
        "only the slow client is gone"
    );

    // Now the slow client reads: what was already on the wire, then close 1008 — and far
    // fewer messages than were sent (the backlog was discarded, not flushed).
    let mut got = 0;
    let code = slow
        .read_until_close(|f| {
            if f.opcode == OP_TEXT {
                got += 1;
            }
        })
        .await;
    assert_eq!(code, Some(1008));
    assert!(got < sent, "got {got} of {sent}");
    drop(slow);
    eventually("the slow client's on_disconnect", || {
        rec.disconnects().len() == 1
    })
    .await;

    for r in readers {
        r.abort();
    }
}
}

/// The receive buffer a socket starts with (`tcp_rmem`'s default); a client that never reads
/// never grows it.
fn tcp_rmem_default() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(128 * 1024)
}

/// 100 clients that never read, with ordinary (default) receive buffers, in a room with 10
/// readers: the bundled server's `SO_SNDBUF` cap keeps each non-reader's backlog in its
/// bounded queue, so every one of the 100 is closed with 1008 before the room has been sent
/// more than the queue bound plus the kernel's buffers (with the kernel's autotuning, up to
/// 4 MiB more per connection), and the readers get every message, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_non_readers_are_all_closed_with_1008_within_the_bound() {
    const SNDBUF: usize = 32 * 1024;
    // The send buffer cap alone: the unsent limit off.
    let config = ServerConfig::default()
        .send_buffer_size(Some(SNDBUF))
        .unsent_limit(None);
    // What one non-reader can absorb before its queue overflows: the kernel's send buffer
    // (it doubles the cap), the client's receive buffer, one batch being written, the queue.
    non_readers_are_closed_within(config, 2 * SNDBUF + tcp_rmem_default() + 64 * 1024).await;
}

/// The same with the kernel's send buffer autotuning left on: the unsent limit
/// (`TCP_NOTSENT_LOWAT`) alone stops a non-reader's socket from taking more than that many
/// unsent bytes (plus one segment of up to 64 KiB on loopback) once its receive window is
/// full. Without it, autotuning lets each take up to 4 MiB first (seen: the assertion fails
/// with `unsent_limit(None)`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unsent_limit_alone_bounds_what_a_non_reader_takes() {
    const UNSENT: usize = 16 * 1024;
    let config = ServerConfig::default()
        .send_buffer_size(None)
        .unsent_limit(Some(UNSENT));
    // The unsent limit and one segment, the client's receive buffer, one batch being written,
    // and one round of slack (the count is checked every 64 KiB).
    let kernel_bound = UNSENT + 64 * 1024 + tcp_rmem_default() + 64 * 1024 + 64 * 1024;
    non_readers_are_closed_within(config, kernel_bound).await;
}

/// 100 non-readers and 10 readers in one room under `config` (with a 64 KiB queue bound):
/// every non-reader is closed with 1008 before the room has been sent more than
/// `kernel_bound` plus the queue bound, and the readers get every message, in order.
async fn non_readers_are_closed_within(config: ServerConfig, kernel_bound: usize) {
    const NON_READERS: usize = 100;
    const READERS: usize = 10;
    const SIZE: usize = 4096;
    const QUEUE_BYTES: usize = 64 * 1024;
    let hub = StreamHub::new();
    let rec = Recorder::new(Some("room"), false);
    let config = config
        .queue(QueueConfig::default().max_bytes(QUEUE_BYTES))
        // The non-readers read their close frames only at the end.
        .close_timeout(std::time::Duration::from_secs(60));
    let server = start_on(Transport::Bundled, &hub, rec.clone(), config).await;
    let addr = server.local_addr();

    let mut non_readers = Vec::new();
    for _ in 0..NON_READERS {
        non_readers.push(RawClient::connect(addr, "/", &[]).await.expect_open());
    }
    let received: Arc<Vec<AtomicUsize>> =
        Arc::new((0..READERS).map(|_| AtomicUsize::new(0)).collect());
    let out_of_order = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..READERS {
        let mut ws = ws_connect(addr, "/").await;
        let received = received.clone();
        let out_of_order = out_of_order.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Binary(t) = msg {
                    let n = received[r].load(Ordering::SeqCst);
                    if t.len() != SIZE || t[..8] != *format!("{n:08}").as_bytes() {
                        out_of_order.store(true, Ordering::SeqCst);
                    }
                    received[r].store(n + 1, Ordering::SeqCst);
                }
            }
        }));
    }
    eventually("all joined", || {
        rec.connected_ids().len() == READERS + NON_READERS
    })
    .await;

    let bound = kernel_bound + QUEUE_BYTES;
    let mut sent = 0;
    loop {
        for _ in 0..16 {
            let mut payload = vec![b'x'; SIZE];
            payload[..8].copy_from_slice(format!("{sent:08}").as_bytes());
            hub.broadcast_to_room("room", SocketMessage::binary(payload))
                .await
                .unwrap();
            sent += 1;
        }
        let target = sent;
        let received = received.clone();
        eventually("readers to catch up", move || {
            received.iter().all(|c| c.load(Ordering::SeqCst) == target)
        })
        .await;
        // A closed non-reader is unregistered at once (its close frame waits for it).
        let open = hub.connection_count().await;
        if open == READERS {
            break;
        }
        assert!(
            sent * SIZE <= bound,
            "{} of {NON_READERS} non-readers closed after {} KiB sent (bound {} KiB)",
            READERS + NON_READERS - open,
            sent * SIZE / 1024,
            bound / 1024
        );
    }
    assert!(
        !out_of_order.load(Ordering::SeqCst),
        "a reader saw a gap or reordering"
    );
    // Each non-reader reads now: what was on the wire, then close 1008.
    for (i, mut slow) in non_readers.into_iter().enumerate() {
        let code = slow.read_until_close(|_| {}).await;
        assert_eq!(code, Some(1008), "non-reader {i}");
    }
    for r in readers {
        r.abort();
    }
}
