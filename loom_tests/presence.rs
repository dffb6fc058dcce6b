//! Presence races: model (e) of the loom suite.

use crate::support::*;

fn presence(hub: &StreamHub) -> (usize, u64, u64) {
    let stats = hub.stats();
    (
        block_on(hub.online_user_count()),
        stats.users_went_online,
        stats.users_went_offline,
    )
}

/// (e) Two devices of one user connect concurrently, then disconnect concurrently: exactly one
/// online transition, exactly one offline transition, exact counts, no underflow.
#[test]
fn e_devices_connect_then_disconnect_concurrently() {
    model(|| {
        let hub = hub();
        let (d1, rx1) = user_socket("d1", "u");
        let (d2, rx2) = user_socket("d2", "u");
        let h = hub.clone();
        let t = thread::spawn(move || {
            block_on(h.register(d1)).unwrap();
            assert!(block_on(h.is_user_online("u")));
            assert_eq!(block_on(h.online_user_count()), 1);
        });
        block_on(hub.register(d2)).unwrap();
        assert!(block_on(hub.is_user_online("u")));
        assert_eq!(block_on(hub.online_user_count()), 1);
        t.join().unwrap();
        assert_eq!(presence(&hub), (1, 1, 0));
        assert_eq!(block_on(hub.online_users()), ["u"]);
        let report = block_on(hub.send_to_user("u", msg("m"))).unwrap();
        assert_eq!(report.queued, 2);

        let h = hub.clone();
        let t = thread::spawn(move || {
            block_on(h.unregister("d1")).unwrap();
            assert!(block_on(h.online_user_count()) <= 1);
        });
        block_on(hub.unregister("d2")).unwrap();
        assert!(block_on(hub.online_user_count()) <= 1);
        t.join().unwrap();
        assert_eq!(presence(&hub), (0, 1, 1));
        assert!(!block_on(hub.is_user_online("u")));
        assert!(block_on(hub.online_users()).is_empty());
        drop((rx1, rx2));
    });
}

/// (e) One device connects while the user's other device disconnects: the user may go
/// offline and back online, but the counters stay exact (online = went_online -
/// went_offline), never exceed one user, and the connecting device sees its user online.
#[test]
fn e_device_connects_while_other_disconnects() {
    model(|| {
        let hub = hub();
        let (d1, rx1) = user_socket("d1", "u");
        block_on(hub.register(d1)).unwrap();
        let (d2, rx2) = user_socket("d2", "u");
        let h = hub.clone();
        let t = thread::spawn(move || {
            block_on(h.register(d2)).unwrap();
            assert!(block_on(h.is_user_online("u")));
            assert_eq!(block_on(h.online_user_count()), 1);
        });
        block_on(hub.unregister("d1")).unwrap();
        assert!(block_on(hub.online_user_count()) <= 1);
        t.join().unwrap();
        let (online, went_on, went_off) = presence(&hub);
        assert_eq!(online, 1);
        assert_eq!(went_on - went_off, 1);
        assert!(went_on == 1 || went_on == 2, "{went_on}");
        assert!(block_on(hub.is_user_online("u")));
        let report = block_on(hub.send_to_user("u", msg("m"))).unwrap();
        assert_eq!(report.queued, 1);
        block_on(hub.unregister("d2")).unwrap();
        let (online, went_on2, went_off2) = presence(&hub);
        assert_eq!((online, went_on2, went_off2), (0, went_on, went_on));
        drop((rx1, rx2));
    });
}
