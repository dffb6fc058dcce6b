//! Room membership races: models (a) to (d) and (i) of the loom suite.

use crate::support::*;

/// (a) `join_room` racing `unregister` of the same socket, joining a room that does not
/// exist yet: once both return, no room holds the socket.
#[test]
fn a_join_vs_unregister_creating_room() {
    model(|| {
        let hub = hub();
        let mut rx = registered(&hub, "s");
        let h = hub.clone();
        let joiner = thread::spawn(move || block_on(h.join_room("s", "r")));
        let removed = block_on(hub.unregister("s"));
        let joined = joiner.join().unwrap();
        assert!(removed.is_some(), "s was registered");
        assert!(
            matches!(joined, Ok(true) | Err(StreamError::SocketNotFound(_))),
            "{joined:?}"
        );
        assert!(members(&hub, "r").is_empty());
        assert!(block_on(hub.get_room("r")).is_none());
        assert!(block_on(hub.list_rooms()).is_empty());
        assert_eq!(hub.stats().rooms, 0);
        assert!(block_on(hub.get_socket_rooms("s")).is_empty());
        let report = block_on(hub.broadcast_to_room("r", msg("m"))).unwrap();
        assert_eq!(report.total(), 0);
        assert!(drain(&mut rx).is_empty());
        assert_eq!(rx.close_reason(), Some(CloseReason::Unregistered));
    });
}

/// (a) The same race through the join fast path (the room exists, another socket is in it)
/// while `unregister` also leaves another room, emptying and removing it.
#[test]
fn a_join_existing_room_vs_unregister() {
    model(|| {
        let hub = hub();
        let mut rx_o = registered(&hub, "o");
        let mut rx_s = registered(&hub, "s");
        block_on(hub.join_room("o", "r")).unwrap();
        block_on(hub.join_room("s", "x")).unwrap();
        let h = hub.clone();
        let joiner = thread::spawn(move || block_on(h.join_room("s", "r")));
        let removed = block_on(hub.unregister("s"));
        let joined = joiner.join().unwrap();
        assert!(removed.is_some());
        assert!(
            matches!(joined, Ok(true) | Err(StreamError::SocketNotFound(_))),
            "{joined:?}"
        );
        assert_eq!(members(&hub, "r"), ["o"]);
        assert!(members(&hub, "x").is_empty());
        assert_eq!(block_on(hub.list_rooms()), ["r"]);
        let report = block_on(hub.broadcast_to_room("r", msg("m"))).unwrap();
        assert_eq!(report.queued, 1);
        assert_eq!(texts(&drain(&mut rx_o)), ["m"]);
        assert!(drain(&mut rx_s).is_empty());
        block_on(hub.unregister("o")).unwrap();
        assert!(block_on(hub.list_rooms()).is_empty());
    });
}

/// (b) A leave that empties a room races a join to it: the join is never lost, whether it
/// lands in the old room or in the successor that replaces the emptied one.
#[test]
fn b_leave_emptying_room_vs_join() {
    model(|| {
        let hub = hub();
        let mut rx_a = registered(&hub, "a");
        let mut rx_b = registered(&hub, "b");
        block_on(hub.join_room("a", "r")).unwrap();
        let h = hub.clone();
        let leaver = thread::spawn(move || block_on(h.leave_room("a", "r")));
        let joined = block_on(hub.join_room("b", "r"));
        let left = leaver.join().unwrap();
        assert!(matches!(joined, Ok(true)), "{joined:?}");
        assert!(matches!(left, Ok(true)), "{left:?}");
        assert_eq!(members(&hub, "r"), ["b"]);
        assert_eq!(block_on(hub.list_rooms()), ["r"]);
        assert_eq!(block_on(hub.get_socket_rooms("b")), ["r"]);
        assert!(block_on(hub.get_socket_rooms("a")).is_empty());
        let report = block_on(hub.broadcast_to_room("r", msg("m"))).unwrap();
        assert_eq!(report.queued, 1);
        assert_eq!(texts(&drain(&mut rx_b)), ["m"]);
        assert!(drain(&mut rx_a).is_empty());
        block_on(hub.unregister("a")).unwrap();
        block_on(hub.unregister("b")).unwrap();
        assert!(block_on(hub.list_rooms()).is_empty());
    });
}

/// (c) Two joins that both create the same room: both are members of one room.
#[test]
fn c_two_joins_create_same_room() {
    model(|| {
        let hub = hub();
        let mut rx_a = registered(&hub, "a");
        let mut rx_b = registered(&hub, "b");
        let h = hub.clone();
        let joiner = thread::spawn(move || block_on(h.join_room("a", "r")));
        let joined_b = block_on(hub.join_room("b", "r"));
        let joined_a = joiner.join().unwrap();
        assert!(matches!(joined_a, Ok(true)), "{joined_a:?}");
        assert!(matches!(joined_b, Ok(true)), "{joined_b:?}");
        assert_eq!(members(&hub, "r"), ["a", "b"]);
        assert_eq!(block_on(hub.list_rooms()), ["r"]);
        let report = block_on(hub.broadcast_to_room("r", msg("m"))).unwrap();
        assert_eq!(report.queued, 2);
        assert_eq!(texts(&drain(&mut rx_a)), ["m"]);
        assert_eq!(texts(&drain(&mut rx_b)), ["m"]);
        block_on(hub.unregister("a")).unwrap();
        block_on(hub.unregister("b")).unwrap();
        assert!(block_on(hub.list_rooms()).is_empty());
    });
}

/// (d) Broadcast vs join and leave through the room index: `b` is the room's only member and
/// leaves (emptying and removing the room) while `a` joins (into the old room, or into a
/// successor). Each thread then broadcasts. The join returned before `m1` began, so `a`
/// receives `m1`; the leave returned before `m2` began, so `b` does not receive `m2`; no one
/// receives anything twice, and each report counts exactly the recipients.
#[test]
fn d_broadcast_vs_join_and_leave_through_room_index() {
    model(|| {
        let hub = hub();
        let mut rx_a = registered(&hub, "a");
        let mut rx_b = registered(&hub, "b");
        block_on(hub.join_room("b", "r")).unwrap();
        let h = hub.clone();
        let joiner = thread::spawn(move || {
            block_on(h.join_room("a", "r")).unwrap();
            block_on(h.broadcast_to_room("r", msg("m1"))).unwrap()
        });
        block_on(hub.leave_room("b", "r")).unwrap();
        let report2 = block_on(hub.broadcast_to_room("r", msg("m2"))).unwrap();
        let report1 = joiner.join().unwrap();
        let got_a = drain(&mut rx_a);
        let got_b = drain(&mut rx_b);
        assert_eq!(count(&got_a, "m1"), 1, "a joined before m1: {got_a:?}");
        assert_eq!(count(&got_b, "m2"), 0, "b left before m2: {got_b:?}");
        assert!(count(&got_a, "m2") <= 1 && count(&got_b, "m1") <= 1);
        assert_eq!(report1.queued, count(&got_a, "m1") + count(&got_b, "m1"));
        assert_eq!(report2.queued, count(&got_a, "m2"));
        assert_eq!(members(&hub, "r"), ["a"]);
        block_on(hub.unregister("a")).unwrap();
        block_on(hub.unregister("b")).unwrap();
        assert!(block_on(hub.list_rooms()).is_empty());
    });
}

/// (d) Three threads: a joiner and a leaver that each broadcast after their change, and a
/// third broadcaster, over a room with a member (`c`) that stays throughout.
#[test]
fn d_broadcast_vs_join_and_leave_three_threads() {
    model(|| {
        let hub = hub();
        let mut rx_a = registered(&hub, "a");
        let mut rx_b = registered(&hub, "b");
        let mut rx_c = registered(&hub, "c");
        block_on(hub.join_room("b", "r")).unwrap();
        block_on(hub.join_room("c", "r")).unwrap();
        let h = hub.clone();
        let joiner = thread::spawn(move || {
            block_on(h.join_room("a", "r")).unwrap();
            block_on(h.broadcast_to_room("r", msg("m1"))).unwrap()
        });
        let h = hub.clone();
        let leaver = thread::spawn(move || {
            block_on(h.leave_room("b", "r")).unwrap();
            block_on(h.broadcast_to_room("r", msg("m2"))).unwrap()
        });
        let report3 = block_on(hub.broadcast_to_room("r", msg("m3"))).unwrap();
        let report1 = joiner.join().unwrap();
        let report2 = leaver.join().unwrap();
        let got = [drain(&mut rx_a), drain(&mut rx_b), drain(&mut rx_c)];
        assert_eq!(count(&got[0], "m1"), 1, "a joined before m1");
        assert_eq!(count(&got[1], "m2"), 0, "b left before m2");
        for m in ["m1", "m2", "m3"] {
            assert_eq!(count(&got[2], m), 1, "c is a member throughout");
            for g in &got {
                assert!(count(g, m) <= 1, "{m} received twice: {g:?}");
            }
        }
        let total = |m| got.iter().map(|g| count(g, m)).sum::<usize>();
        assert_eq!(report1.queued, total("m1"));
        assert_eq!(report2.queued, total("m2"));
        assert_eq!(report3.queued, total("m3"));
        assert_eq!(members(&hub, "r"), ["a", "c"]);
        for id in ["a", "b", "c"] {
            block_on(hub.unregister(id)).unwrap();
        }
        assert!(block_on(hub.list_rooms()).is_empty());
    });
}

/// (i) A leave that moves a member across chunks, racing a broadcast. Under loom `CHUNK` is 4,
/// so five members fill chunk 0 (`a b c d`) and start chunk 1 (`e`); `b` leaving moves `e`
/// from chunk 1 into `b`'s slot in chunk 0 (the cross-chunk branch of `RoomCell::remove`).
/// Every member other than `b` is in the room throughout, so the racing broadcast reaches
/// each of them exactly once, whatever the interleaving; afterwards `e`'s new position is
/// right (it can leave again) and a second broadcast reaches exactly `a c d`.
///
/// With `--cfg nucleus_loom_planted_bug` the leave publishes the shrunk last chunk before it
/// fills the hole, and this model fails: the broadcast can see a snapshot without `e`.
#[test]
fn i_leave_moves_member_across_chunks_vs_broadcast() {
    const IDS: [&str; 5] = ["a", "b", "c", "d", "e"];
    model(|| {
        let hub = hub();
        let mut rx: Vec<Receiver> = IDS.iter().map(|id| registered(&hub, id)).collect();
        for id in IDS {
            block_on(hub.join_room(id, "r")).unwrap();
        }
        let h = hub.clone();
        let leaver = thread::spawn(move || {
            assert!(block_on(h.leave_room("b", "r")).unwrap());
        });
        let report = block_on(hub.broadcast_to_room("r", msg("m1"))).unwrap();
        leaver.join().unwrap();
        let got: Vec<_> = rx.iter_mut().map(drain).collect();
        for (id, g) in IDS.iter().zip(&got) {
            let n = count(g, "m1");
            if *id == "b" {
                assert!(n <= 1, "b received m1 twice");
            } else {
                assert_eq!(n, 1, "{id} is a member throughout but got {g:?}");
            }
        }
        let total: usize = got.iter().map(|g| count(g, "m1")).sum();
        assert_eq!(report.queued, total);
        assert_eq!(members(&hub, "r"), ["a", "c", "d", "e"]);
        // `e` now sits at `b`'s old slot: leaving must find it there.
        assert!(block_on(hub.leave_room("e", "r")).unwrap());
        let report = block_on(hub.broadcast_to_room("r", msg("m2"))).unwrap();
        assert_eq!(report.queued, 3);
        let got: Vec<_> = rx.iter_mut().map(drain).collect();
        for (id, g) in IDS.iter().zip(&got) {
            let want = usize::from(matches!(*id, "a" | "c" | "d"));
            assert_eq!(count(g, "m2"), want, "{id}: {g:?}");
        }
        for id in IDS {
            block_on(hub.unregister(id)).unwrap();
        }
        assert!(block_on(hub.list_rooms()).is_empty());
    });
}
