//! History through the hub API with real threads: joins with `since` racing several
//! publishers get exactly the offsets after `since`, in order; members get every offset in
//! order; uncovered positions are not recovered; rooms without history are unchanged.

use std::thread;

use nucleus_stream::{
    HistoryConfig, HubConfig, QueueConfig, Receiver, SocketMessage, StreamHub, StreamPosition,
    WebSocket, channel,
};

use crate::support::block_on;

fn hub(max_messages: usize) -> StreamHub {
    StreamHub::with_config(
        HubConfig::default().history(
            HistoryConfig::default()
                .prefix("h:")
                .max_messages(max_messages),
        ),
    )
}

fn member(hub: &StreamHub, id: &str) -> Receiver {
    let (tx, rx) = channel(QueueConfig::default().max_messages(16_384));
    block_on(hub.register(WebSocket::new(id, tx))).unwrap();
    rx
}

fn numbered(pos: StreamPosition) -> SocketMessage {
    SocketMessage::text(pos.offset.to_string())
}

fn offsets(rx: &mut Receiver) -> Vec<u64> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m.as_text().unwrap().parse().unwrap());
    }
    out
}

#[test]
fn joins_with_since_racing_three_publishers_get_exactly_what_follows() {
    const PER_PUBLISHER: u64 = 2_000;
    const PUBLISHERS: u64 = 3;
    // A window above everything published (6,000): a joiner thread preempted between
    // reading the position and joining may fall any distance behind, and must still be
    // covered (with 4,096 it once fell 4,097+ behind on a loaded machine: "not recovered").
    let hub = hub(8_192);
    let mut rx_a = member(&hub, "a");
    block_on(hub.join_room("a", "h:r")).unwrap();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let h = hub.clone();
            thread::spawn(move || {
                for _ in 0..PER_PUBLISHER {
                    block_on(h.publish_to_room("h:r", None, numbered)).unwrap();
                }
            })
        })
        .collect();
    // Joiners come and go while the publishers run, each from a recent position.
    let hub2 = hub.clone();
    let joiners = thread::spawn(move || {
        let mut joined = Vec::new();
        for i in 0..40 {
            let since = hub2.room_position("h:r").unwrap();
            let since = StreamPosition::new(since.epoch, since.offset.saturating_sub(i * 7));
            let id = format!("j{i}");
            let rx = member(&hub2, &id);
            let recovery = block_on(hub2.join_room_since(&id, "h:r", Some(since))).unwrap();
            assert!(recovery.recovered, "{recovery:?}");
            assert_eq!(recovery.replayed, recovery.position.offset - since.offset);
            joined.push((since, rx));
            thread::yield_now();
        }
        joined
    });
    for p in publishers {
        p.join().unwrap();
    }
    let last = PER_PUBLISHER * PUBLISHERS;
    for (since, mut rx) in joiners.join().unwrap() {
        let got = offsets(&mut rx);
        let want: Vec<u64> = (since.offset + 1..=last).collect();
        assert_eq!(got.len(), want.len(), "joiner at {since:?}: count");
        assert_eq!(got, want, "joiner at {since:?}: gap, duplicate or disorder");
    }
    assert_eq!(offsets(&mut rx_a), (1..=last).collect::<Vec<_>>());
    assert_eq!(hub.room_position("h:r").unwrap().offset, last);
}

#[test]
fn uncovered_positions_are_not_recovered_and_join_live() {
    let hub = hub(10);
    let mut rx_a = member(&hub, "a");
    block_on(hub.join_room("a", "h:r")).unwrap();
    for _ in 0..25 {
        block_on(hub.publish_to_room("h:r", None, numbered)).unwrap();
    }
    assert_eq!(offsets(&mut rx_a).len(), 25);
    let top = hub.room_position("h:r").unwrap();
    assert_eq!(top.offset, 25);
    let cases = [
        StreamPosition::new(top.epoch, 14), // 11 missed > 10 kept
        StreamPosition::new(top.epoch ^ 1, 20),
        StreamPosition::new(top.epoch, 26),
    ];
    for (i, since) in cases.into_iter().enumerate() {
        let id = format!("b{i}");
        let mut rx = member(&hub, &id);
        let r = block_on(hub.join_room_since(&id, "h:r", Some(since))).unwrap();
        assert!(!r.recovered, "{since:?}: {r:?}");
        assert_eq!(r.replayed, 0);
        assert_eq!(r.position, top);
        assert!(offsets(&mut rx).is_empty());
    }
    // The edge of the window is covered: 10 missed, 10 kept.
    let mut rx = member(&hub, "c");
    let r = block_on(hub.join_room_since("c", "h:r", Some(StreamPosition::new(top.epoch, 15))))
        .unwrap();
    assert!(r.recovered);
    assert_eq!(r.replayed, 10);
    assert_eq!(offsets(&mut rx).len(), 10);
    // Up to date: recovered, nothing to replay. Already a member: nothing replayed.
    let r =
        block_on(hub.join_room_since("c", "h:r", Some(StreamPosition::new(top.epoch, 3)))).unwrap();
    assert!(!r.joined);
    assert_eq!(r.replayed, 0);
    let mut rx = member(&hub, "d");
    let r = block_on(hub.join_room_since("d", "h:r", Some(top))).unwrap();
    assert!(r.recovered && r.replayed == 0);
    assert!(offsets(&mut rx).is_empty());
}

#[test]
fn the_log_outlives_an_emptied_room_and_each_hub_has_its_own_epoch() {
    let hub = hub(100);
    let _rx = member(&hub, "a");
    block_on(hub.join_room("a", "h:r")).unwrap();
    let p = block_on(hub.publish_to_room("h:r", Some("a"), numbered))
        .unwrap()
        .position
        .unwrap();
    assert_eq!(p.offset, 1);
    block_on(hub.unregister("a")).unwrap(); // the room empties and disappears
    assert!(block_on(hub.get_room("h:r")).is_none());
    block_on(hub.broadcast_to_room("h:r", SocketMessage::text("2"))).unwrap();
    let mut rx = member(&hub, "b");
    let r =
        block_on(hub.join_room_since("b", "h:r", Some(StreamPosition::new(p.epoch, 0)))).unwrap();
    assert!(r.recovered);
    assert_eq!(offsets(&mut rx), [1, 2]);
    let other = self::hub(100);
    assert_ne!(other.room_position("h:r").unwrap().epoch, p.epoch);
}

#[test]
fn rooms_without_history_are_unchanged() {
    let hub = hub(100);
    let mut rx = member(&hub, "a");
    block_on(hub.join_room("a", "plain")).unwrap();
    assert_eq!(hub.room_position("plain"), None);
    let published = block_on(hub.publish_to_room("plain", None, |pos| {
        assert_eq!(pos, StreamPosition::new(0, 0));
        SocketMessage::text("7")
    }))
    .unwrap();
    assert_eq!(published.position, None);
    assert_eq!(published.report.queued, 1);
    assert_eq!(offsets(&mut rx), [7]);
    let (tx, _rx2) = channel(QueueConfig::default());
    block_on(hub.register(WebSocket::new("b", tx))).unwrap();
    let r = block_on(hub.join_room_since("b", "plain", Some(StreamPosition::new(5, 5)))).unwrap();
    assert!(!r.recovered && r.joined);
}

fn tag(pos: StreamPosition, msg: &SocketMessage) -> SocketMessage {
    SocketMessage::text(format!("{}@{}", msg.as_text().unwrap_or(""), pos.offset))
}

#[test]
fn the_stamp_writes_positions_into_plain_broadcasts_and_leaves_built_messages_alone() {
    let hub = StreamHub::with_config(
        HubConfig::default().history(HistoryConfig::default().prefix("h:").stamp(tag)),
    );
    let (tx, mut rx) = channel(QueueConfig::default());
    block_on(hub.register(WebSocket::new("a", tx))).unwrap();
    block_on(hub.join_room("a", "h:r")).unwrap();
    block_on(hub.broadcast_to_room("h:r", SocketMessage::text("plain"))).unwrap();
    let built = block_on(hub.publish_to_room("h:r", None, |pos| {
        SocketMessage::text(format!("built#{}", pos.offset))
    }))
    .unwrap();
    assert_eq!(built.position.map(|p| p.offset), Some(2));
    // Rooms without history are not stamped.
    block_on(hub.join_room("a", "plain")).unwrap();
    block_on(hub.broadcast_to_room("plain", SocketMessage::text("x"))).unwrap();
    let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|m| m.as_text().unwrap().to_string())
        .collect();
    assert_eq!(got, ["plain@1", "built#2", "x"]);
    // What a rejoin replays is stamped the same way.
    let (tx, mut rx2) = channel(QueueConfig::default());
    block_on(hub.register(WebSocket::new("b", tx))).unwrap();
    let r = block_on(hub.join_room_since(
        "b",
        "h:r",
        Some(StreamPosition::new(built.position.unwrap().epoch, 0)),
    ))
    .unwrap();
    assert!(r.recovered);
    let replayed: Vec<String> = std::iter::from_fn(|| rx2.try_recv().ok())
        .map(|m| m.as_text().unwrap().to_string())
        .collect();
    assert_eq!(replayed, ["plain@1", "built#2"]);
}

/// In a room with history a burst is published message by message: each gets the next
/// offset, is built with it and logged, and a rejoin with `since` replays the burst's tail.
#[test]
fn a_burst_into_a_history_room_gets_consecutive_offsets_and_is_recoverable() {
    let hub = hub(64);
    let mut a = member(&hub, "a");
    block_on(hub.join_room("a", "h:r")).unwrap();
    let first = block_on(hub.publish_to_room("h:r", None, numbered)).unwrap();
    let first = first.position.expect("a history room");
    let published =
        block_on(hub.publish_many_to_room("h:r", None, 0..3, |_, pos| numbered(pos))).unwrap();
    let last = published.position.expect("a history room");
    assert_eq!((last.epoch, last.offset), (first.epoch, first.offset + 3));
    assert_eq!(published.report.queued, 3);
    let base = first.offset;
    assert_eq!(offsets(&mut a), [base, base + 1, base + 2, base + 3]);
    let mut b = member(&hub, "b");
    let since = StreamPosition::new(first.epoch, base + 1);
    let r = block_on(hub.join_room_since("b", "h:r", Some(since))).unwrap();
    assert!(r.recovered);
    assert_eq!(offsets(&mut b), [base + 2, base + 3]);
}
