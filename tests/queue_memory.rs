//! Idle cost: an idle queue and an idle registered socket hold little memory. Measured with a
//! counting global allocator (live bytes of this test's thread: all its work runs on it, on a
//! current-thread runtime), so this binary has a single test.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::thread_live as live;

use nucleus_stream::{QueueConfig, SocketMessage, StreamHub, WebSocket, channel};

#[test]
fn idle_queues_and_sockets_are_small() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // 1. A queue with a 4,096-message / 1 MiB bound preallocates nothing of that capacity:
    // its header is one `Arc` of about a hundred bytes (112 measured: no cache-line padding;
    // with crossbeam's `SegQueue` inside it was 528).
    let before = live();
    let (tx, mut rx) = channel(QueueConfig::default());
    let fresh = live() - before;
    println!("fresh queue: {fresh} bytes");
    assert!(fresh <= 160, "a fresh queue holds {fresh} bytes");

    // 2. One message, then drained: the one segment that stays is the idle connection's
    // largest queue item once its first message came (a join announcement, say). Its slots
    // hold a one-word handle to the shared message: 7 slots + the `next` pointer + 7
    // one-byte ready flags = 72 B (src/queue/segments.rs). `SegQueue`'s block of 31 slots was 504 B.
    // The bound leaves room for the harness's own stray allocations.
    let (tx1, mut rx1) = channel(QueueConfig::default());
    let empty = live();
    tx1.try_send(SocketMessage::text("hello")).unwrap();
    assert_eq!(rx1.try_recv().unwrap(), SocketMessage::text("hello"));
    let kept = live() - empty;
    println!("queue storage kept after one message: {kept} bytes");
    assert!(
        kept <= 120,
        "a queue drained of one message keeps {kept} bytes"
    );
    drop((tx1, rx1));

    // 3. After traffic, a drained queue keeps at most one segment.
    for i in 0..1_000 {
        tx.try_send(SocketMessage::text(format!("{i}"))).unwrap();
    }
    while rx.try_recv().is_ok() {}
    let drained = live() - before;
    // The header (112 B) and one segment (72 B) stay: measured 184 B (1,016 B with
    // `SegQueue`: its 512-byte header and a 504-byte block). The counter is process-wide, so
    // the harness's own allocations can add a few dozen bytes (a bound of 40 B over the
    // measure failed once in six runs). Keeping the 1,000 messages or their segments would be
    // KiB.
    println!("queue header + segment after 1,000 messages, drained: {drained} bytes");
    assert!(drained <= 320, "a drained queue holds {drained} bytes");
    drop((tx, rx));

    // 4. An idle registered socket in one room, hub bookkeeping included, per socket.
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
    // Measured 429 B (828 B with `SegQueue`'s padded header).
    assert!(per_socket <= 512, "{per_socket} bytes per idle socket");

    // 5. The same sockets after one broadcast to the room, each queue drained: one 7-slot
    // segment more per socket (72 B; `SegQueue`'s block was 504 B). The message itself is one
    // shared allocation, freed with the last handle.
    rt.block_on(async {
        let report = hub
            .broadcast_to_room("lobby", SocketMessage::text("welcome"))
            .await
            .unwrap();
        assert_eq!(report.queued, n);
    });
    // Queued: each socket's queue holds a handle in a new segment; the message itself is
    // allocated once for the whole broadcast (a handle allocated per recipient would add its
    // 56 bytes to every socket).
    let queued = (live() - before) / n as isize - per_socket;
    println!("one broadcast queued to {n} sockets: {queued} bytes per socket");
    assert!(
        queued <= 96,
        "one queued broadcast costs {queued} bytes per socket"
    );
    for rx in &mut keep {
        assert_eq!(rx.try_recv().unwrap(), SocketMessage::text("welcome"));
    }
    let after_broadcast = (live() - before) / n as isize;
    println!("idle registered socket after one broadcast, drained: {after_broadcast} bytes");
    assert!(
        after_broadcast - per_socket <= 96,
        "one broadcast left {} bytes per socket",
        after_broadcast - per_socket
    );
}
