//! The history seam: model (j) of the loom suite.
//!
//! A socket joins a room with `since` while publishers broadcast into it. Once everyone is
//! done, the joiner's queue must hold exactly the offsets `since+1..=last`, in order: the
//! replayed part and the live part meet with no gap and no duplicate. The room's existing
//! member must receive every offset in order (one deliverer at a time).
//!
//! `--cfg nucleus_loom_planted_bug_history` makes the joiner join and read the delivered
//! cursor without taking the deliverer role; these models must then fail.

use crate::support::*;
use nucleus_stream::{HistoryConfig, StreamPosition};

/// A hub whose every room keeps 2 messages (a ring of 4 slots).
fn history_hub() -> StreamHub {
    StreamHub::with_config(
        HubConfig::default()
            .shards(1)
            .history(HistoryConfig::default().prefix("").max_messages(2)),
    )
}

/// The message for an offset: its number, as a static string (no allocation to model).
fn numbered(pos: StreamPosition) -> SocketMessage {
    const NAMES: [&str; 6] = ["0", "1", "2", "3", "4", "5"];
    msg(NAMES[pos.offset as usize])
}

fn offsets(rx: &mut Receiver) -> Vec<u64> {
    drain(rx)
        .iter()
        .map(|m| m.as_text().expect("text").parse().expect("a number"))
        .collect()
}

fn publish(hub: &StreamHub) {
    let published = block_on(hub.publish_to_room("r", None, numbered)).unwrap();
    assert!(published.position.is_some());
}

/// Runs the seam with `publishers` threads publishing `per_publisher` messages each while the
/// main thread joins "b" at offset 1.
fn seam(publishers: usize, per_publisher: usize) {
    model(move || {
        let hub = history_hub();
        let mut rx_a = registered(&hub, "a");
        let mut rx_b = registered(&hub, "b");
        block_on(hub.join_room("a", "r")).unwrap();
        publish(&hub);
        let since = hub.room_position("r").expect("history room");
        assert_eq!(since.offset, 1);
        let threads: Vec<_> = (0..publishers)
            .map(|_| {
                let h = hub.clone();
                thread::spawn(move || {
                    for _ in 0..per_publisher {
                        publish(&h);
                    }
                })
            })
            .collect();
        let recovery = block_on(hub.join_room_since("b", "r", Some(since))).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        let last = (1 + publishers * per_publisher) as u64;
        assert!(recovery.recovered, "{recovery:?}");
        assert!(recovery.joined);
        let got_b = offsets(&mut rx_b);
        let want_b: Vec<u64> = (2..=last).collect();
        assert_eq!(
            got_b, want_b,
            "joiner: gap or duplicate at the seam ({recovery:?})"
        );
        assert_eq!(recovery.replayed, recovery.position.offset - 1);
        let got_a = offsets(&mut rx_a);
        assert_eq!(got_a, (1..=last).collect::<Vec<_>>(), "member: order");
        assert_eq!(hub.room_position("r").unwrap().offset, last);
        block_on(hub.unregister("a")).unwrap();
        block_on(hub.unregister("b")).unwrap();
    });
}

/// (j) One publisher publishing two messages races a join with `since`.
#[test]
fn j_history_seam_one_publisher() {
    seam(1, 2);
}

/// (j) Two publishers racing each other (offsets may be written out of order) and a join
/// with `since`.
#[test]
fn j_history_seam_two_publishers() {
    seam(2, 1);
}

/// The cluster's epoch in the models below (any non-zero value).
const EPOCH: u64 = 7;

fn redis_pos(offset: u64) -> StreamPosition {
    StreamPosition::new(EPOCH, offset)
}

/// (l) Cluster ring: the node's subscriber delivers the Redis offsets 2 and 3 while a client
/// that has 1 joins through the ring (the room has a local member, so the ring is trusted):
/// it gets exactly 2 and 3, and the member 1, 2, 3.
#[test]
fn l_cluster_ring_seam() {
    model(|| {
        let hub = history_hub();
        let mut rx_a = registered(&hub, "a");
        let mut rx_b = registered(&hub, "b");
        block_on(hub.join_room("a", "r")).unwrap();
        hub.loom_deliver_history("r", redis_pos(1), numbered(redis_pos(1)));
        let h = hub.clone();
        let subscriber = thread::spawn(move || {
            for offset in 2..=3 {
                h.loom_deliver_history("r", redis_pos(offset), numbered(redis_pos(offset)));
            }
        });
        let recovery = hub
            .loom_join_covered("b", "r", redis_pos(1), false)
            .expect("the ring covers it");
        subscriber.join().unwrap();
        assert!(recovery.recovered, "{recovery:?}");
        assert_eq!(
            offsets(&mut rx_b),
            [2, 3],
            "joiner: gap or duplicate ({recovery:?})"
        );
        assert_eq!(offsets(&mut rx_a), [1, 2, 3], "member: order");
        block_on(hub.unregister("a")).unwrap();
        block_on(hub.unregister("b")).unwrap();
    });
}

/// (l) Cluster seed: no local member; offsets 1 and 2 are in flight to the node's subscriber
/// (the joiner already read them from Redis) and 3 follows. The joiner joins at 2 through
/// the ring — covered, or seeded when the ring is behind — and gets exactly 3.
#[test]
fn l_cluster_ring_seed() {
    model(|| {
        let hub = history_hub();
        let mut rx_b = registered(&hub, "b");
        let h = hub.clone();
        let subscriber = thread::spawn(move || {
            for offset in 1..=3 {
                h.loom_deliver_history("r", redis_pos(offset), numbered(redis_pos(offset)));
            }
        });
        let recovery = hub
            .loom_join_covered("b", "r", redis_pos(2), true)
            .expect("covered or seeded");
        subscriber.join().unwrap();
        assert!(recovery.recovered, "{recovery:?}");
        assert_eq!(
            offsets(&mut rx_b),
            [3],
            "joiner: gap or duplicate ({recovery:?})"
        );
        assert_eq!(hub.room_position("r").unwrap(), redis_pos(3));
        block_on(hub.unregister("b")).unwrap();
    });
}
