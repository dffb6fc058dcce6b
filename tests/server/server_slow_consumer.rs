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
