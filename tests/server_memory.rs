//! Memory that comes back: after a backlog is drained, a connection holds what it held before
//! it (no read or write buffer, batch or chunk list at its high-water mark); and the size of
//! a connection's future. Measured with a counting global allocator (live bytes), so this
//! binary has its own allocator and one test.

#![cfg(feature = "server")]

mod support;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::live;

use nucleus_stream::server::{Admission, ServerConfig, StreamService};
use nucleus_stream::{SocketMessage, StreamHub};
use support::wire::*;

const BACKLOG: usize = 700;
const SIZE: usize = 1024;

#[test]
fn a_drained_backlog_leaves_no_buffer_behind_and_the_connection_future_is_small() {
    // The future of one connection, as a transport spawns it.
    let hub = StreamHub::new();
    let service = StreamService::new(hub.clone(), Quiet, ServerConfig::default());
    let (_client, server_side) = tokio::io::duplex(64);
    let before = live();
    let future = service.serve_upgraded(server_side, Admission::anonymous(), None);
    // The future itself plus what creating it allocated (the boxed connection state).
    let future_size = std::mem::size_of_val(&future) as isize + (live() - before);
    println!("connection future: {future_size} bytes");
    // 912 bytes measured (round 2 session 5): the hand-written loop and the shared
    // heartbeat sweep keep it under a kilobyte.
    assert!(
        future_size <= 1024,
        "connection future is {future_size} bytes"
    );
    drop(future);

    // One thread: the writer's per-thread scratch (a staging block and a spare chunk list,
    // `src/server/outbox.rs`) is then made by the warm-up message, before `before` is read,
    // and what is left after draining is what the connection itself keeps. With more worker
    // threads each would make its own, once, whichever runs a batch first.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let rec = Recorder::new(Some("room"), false);
        let service =
            StreamService::with_shared_handler(hub.clone(), rec.clone(), ServerConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let stream = socket.connect(addr).await.unwrap();
            RawClient::from_stream(stream, "/").await.expect_open()
        });
        // A tiny send buffer keeps the backlog in the server's queue and outbox, where the
        // allocator sees it.
        let stream = foreign_upgrade(&listener).await;
        set_send_buffer(&stream, 4096);
        let task = tokio::spawn(service.serve_upgraded(stream, Admission::anonymous(), None));
        let mut c = client.await.unwrap();
        eventually("joined", || rec.connected_ids().len() == 1).await;
        // One message through, so every lazily built structure exists.
        hub.broadcast_to_room("room", SocketMessage::text("warm"))
            .await
            .unwrap();
        assert_eq!(c.read_frame().await.unwrap().payload, b"warm");
        c.shrink();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let before = live();

        // A backlog the client does not read (within the queue's 1 MiB bound)...
        let text = "x".repeat(SIZE);
        for _ in 0..BACKLOG {
            hub.broadcast_to_room("room", SocketMessage::text(&text))
                .await
                .unwrap();
        }
        let peak = live() - before;
        assert!(
            peak >= (BACKLOG * SIZE) as isize / 2,
            "the backlog is held somewhere: {peak} bytes"
        );
        // ...then drained.
        for _ in 0..BACKLOG {
            let f = c.read_frame().await.expect("a frame");
            assert_eq!(f.payload.len(), SIZE);
        }
        c.shrink();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let after = live() - before;
        println!("backlog peak {peak} bytes, after draining {after} bytes");
        assert!(
            after <= 4096,
            "{after} bytes still held after the backlog was drained (peak {peak})"
        );
        drop(c);
        service.shutdown();
        service.stopped().await;
        task.await.unwrap();
    });
}

struct Quiet;

#[nucleus_stream::async_trait]
impl nucleus_stream::StreamHandler for Quiet {
    async fn on_message(&self, _: &StreamHub, _: &nucleus_stream::WebSocket, _: SocketMessage) {}
}
