//! Memory per stored history message, measured with a counting global allocator (live
//! bytes), so this binary has a single test. The figure is quoted in docs/history.md.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::live;

use nucleus_stream::{Bytes, HistoryConfig, HubConfig, SocketMessage, StreamHub};

#[test]
fn a_stored_message_costs_its_payload_plus_a_small_fixed_overhead() {
    const KEPT: usize = 10_000;
    const PAYLOAD: usize = 64;
    let hub = StreamHub::with_config(
        HubConfig::default().history(HistoryConfig::default().prefix("").max_messages(KEPT)),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let payloads: Vec<Bytes> = (0..2 * KEPT)
        .map(|i| Bytes::from(vec![(i % 251) as u8; PAYLOAD]))
        .collect();

    // The empty log: the ring of slots (2 × KEPT rounded up to a power of two).
    let before = live();
    assert!(hub.room_position("r").is_some());
    let ring = live() - before;

    // Fill the window, then publish a second window's worth: memory stays at one window.
    let mut it = payloads.into_iter();
    let before = live();
    for p in it.by_ref().take(KEPT) {
        rt.block_on(hub.broadcast_to_room("r", SocketMessage::binary(p)))
            .unwrap();
    }
    let full = live() - before;
    // The payloads were allocated before `before`: this is the log's own cost per message
    // (the payload itself is shared with the recipients' queues, and kept alive by the log).
    let per_message = full as f64 / KEPT as f64;
    // The second window overwrites slots: nothing grows beyond the ring's capacity.
    for p in it {
        rt.block_on(hub.broadcast_to_room("r", SocketMessage::binary(p)))
            .unwrap();
    }
    let after_second = live() - before;
    println!(
        "history memory: ring {ring} B for {KEPT} kept ({:.1} B/slot of the window), \
         {per_message:.1} B per stored message beyond its {PAYLOAD} B payload; \
         after {} more: {after_second} B (window full: {full} B)",
        ring as f64 / KEPT as f64,
        KEPT
    );
    assert!(per_message <= 160.0, "{per_message} B per stored message");
    assert!(ring as usize <= 2 * 16_384 * 16 + 4_096, "ring {ring} B");
    // Bounded: with a ring of 2×KEPT slots the second window may fill the other half once.
    assert!(
        after_second <= 2 * full + 4_096,
        "{after_second} B after 2 windows"
    );
}
