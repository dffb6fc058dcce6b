//! Model (h): nothing leaks. Every model of the suite ends with its hub, sockets and
//! receivers dropped, and loom fails a model whose `loom::sync::Arc`s are not all released.
//! This model targets the reclamation paths directly: snapshots that outlive the membership
//! they were taken from, and a hub dropped while its rooms still have members.

use crate::support::*;

/// (h) A room snapshot and a broadcast in flight hold old memberships while a member leaves
/// and another joins; then the hub is dropped with a member still in the room, before the
/// snapshot. Every entry, snapshot and retire link must be freed exactly when the last
/// holder goes.
#[test]
fn h_snapshots_outlive_membership_and_hub() {
    model(|| {
        let hub = hub();
        let mut rx_a = registered(&hub, "a");
        let mut rx_b = registered(&hub, "b");
        block_on(hub.join_room("a", "r")).unwrap();
        let h = hub.clone();
        let t = thread::spawn(move || {
            let room = block_on(h.get_room("r"));
            let report = block_on(h.broadcast_to_room("r", msg("m"))).unwrap();
            (room, report)
        });
        block_on(hub.join_room("b", "r")).unwrap();
        block_on(hub.leave_room("a", "r")).unwrap();
        let (room, report) = t.join().unwrap();
        let room = room.expect("r always has a member");
        assert!(room.contains("a") || room.contains("b"));
        let (got_a, got_b) = (count(&drain(&mut rx_a), "m"), count(&drain(&mut rx_b), "m"));
        assert!(got_a <= 1 && got_b <= 1);
        assert_eq!(report.queued, got_a + got_b);
        drop(hub);
        // The snapshot still points at live entries after the hub is gone.
        assert!(room.size() >= 1);
        assert!(room.members().all(|id| id == "a" || id == "b"));
        drop(room);
        drop((rx_a, rx_b));
    });
}

/// (h) A broadcast walks a snapshot while the only member unregisters and its receiver is
/// dropped, which drops the last owning references to its entry and its queue: the
/// snapshot's retire chain must keep them alive until the broadcast is done, then free them.
#[test]
fn h_broadcast_vs_unregister_of_member() {
    model(|| {
        let hub = hub();
        let rx = registered(&hub, "a");
        block_on(hub.join_room("a", "r")).unwrap();
        let h = hub.clone();
        let t = thread::spawn(move || block_on(h.broadcast_to_room("r", msg("m"))).unwrap());
        let removed = block_on(hub.unregister("a")).expect("registered");
        drop(removed);
        drop(rx);
        let report = t.join().unwrap();
        assert!(report.total() <= 1);
        assert_eq!(report.total(), report.queued + report.closed);
        assert!(block_on(hub.list_rooms()).is_empty());
    });
}
