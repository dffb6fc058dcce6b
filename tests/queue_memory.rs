//! Idle cost: an idle queue and an idle registered socket hold little memory. Measured with a
//! counting global allocator (live bytes), so this binary has a single test.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::live;

use nucleus_stream::{QueueConfig, SocketMessage, StreamHub, WebSocket, channel};

#[test]
fn idle_queues_and_sockets_are_small() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // 1. A queue with a 4,096-message / 1 MiB bound preallocates nothing of that capacity.
    let before = live();
    let (tx, mut rx) = channel(QueueConfig::default());
    let fresh = live() - before;
    assert!(fresh <= 512, "a fresh queue holds {fresh} bytes");

    // 2. After traffic, a drained queue keeps at most one segment.
    for i in 0..1_000 {
        tx.try_send(SocketMessage::text(format!("{i}"))).unwrap();
    }
    while rx.try_recv().is_ok() {}
    let drained = live() - before;
    assert!(drained <= 2_048, "a drained queue holds {drained} bytes");
    drop((tx, rx));

    // 3. An idle registered socket in one room, hub bookkeeping included, per socket.
    let hub = StreamHub::new();
    let n = 2_000;
    let mut keep = Vec::with_capacity(n);
    let ids: Vec<String> = (0..n).map(|i| format!("conn-{i:06}")).collect();
    let before = live();
    rt.block_on(async {
        for id in &ids {
            let (tx, rx) = channel(QueueConfig::default());
            hub.register(WebSocket::new(id.as_str(), tx)).await.unwrap();
            hub.join_room(id, "lobby").await.unwrap();
            keep.push(rx);
        }
    });
    let per_socket = (live() - before) / n as isize;
    println!("idle registered socket in one room: {per_socket} bytes");
    assert!(per_socket <= 1_024, "{per_socket} bytes per idle socket");
}
