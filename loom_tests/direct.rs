//! Direct messages racing (un)registration: model (f) of the loom suite.

use crate::support::*;

/// (f) `register` then `send_to_user` in one thread, `unregister` then `send_to` of the same
/// socket in another. Whatever the order: a message the hub accepted is delivered exactly
/// once, a refused one is not; the register/unregister race leaves the socket, its user's
/// presence and the counters consistent.
#[test]
fn f_send_vs_register_and_unregister() {
    model(|| {
        let hub = hub();
        let (t, mut rx) = user_socket("t", "u");
        let h = hub.clone();
        let registrar = thread::spawn(move || {
            block_on(h.register(t)).unwrap();
            block_on(h.send_to_user("u", msg("m1"))).unwrap()
        });
        let removed = block_on(hub.unregister("t"));
        let sent = block_on(hub.send_to("t", msg("m2")));
        let report = registrar.join().unwrap();
        let registered = block_on(hub.is_registered("t"));
        assert_eq!(registered, removed.is_none());
        assert_eq!(block_on(hub.is_user_online("u")), registered);
        assert_eq!(block_on(hub.online_user_count()), usize::from(registered));
        assert_eq!(block_on(hub.connection_count()), usize::from(registered));
        if registered {
            // Nobody unregistered it after its registration returned.
            assert_eq!(report.queued, 1);
        } else {
            assert!(
                matches!(sent, Err(StreamError::SocketNotFound(_))),
                "{sent:?}"
            );
            assert_eq!(rx.close_reason(), Some(CloseReason::Unregistered));
        }
        let got = drain(&mut rx);
        assert_eq!(count(&got, "m1"), report.queued);
        assert_eq!(count(&got, "m2"), usize::from(sent.is_ok()));
        assert_eq!(got.len(), report.queued + usize::from(sent.is_ok()));
        drop(removed);
        block_on(hub.unregister("t"));
        assert_eq!(hub.stats().online_users, 0);
    });
}

/// (f) `send_to` and `send_to_user` race `unregister` of the target while the target's
/// consumer drains its queue to the end: exactly the messages the hub accepted are received,
/// in order, and nothing is accepted after the consumer saw the end.
#[test]
fn f_send_to_and_send_to_user_vs_unregister() {
    model(|| {
        let hub = hub();
        let (t, mut rx) = user_socket("t", "u");
        block_on(hub.register(t)).unwrap();
        let h = hub.clone();
        let sender = thread::spawn(move || {
            let first = block_on(h.send_to("t", msg("m1")));
            let second = block_on(h.send_to_user("u", msg("m2"))).unwrap();
            (first, second)
        });
        assert!(block_on(hub.unregister("t")).is_some());
        assert!(matches!(
            block_on(hub.send_to("t", msg("late"))),
            Err(StreamError::SocketNotFound(_))
        ));
        let mut got = Vec::new();
        while let Some(m) = block_on(rx.recv()) {
            got.push(m);
        }
        let (first, second) = sender.join().unwrap();
        let mut expected = Vec::new();
        if first.is_ok() {
            expected.push("m1");
        }
        if second.queued == 1 {
            expected.push("m2");
        }
        assert_eq!(second.total(), second.queued + second.closed);
        assert_eq!(texts(&got), expected);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
        assert_eq!(rx.close_reason(), Some(CloseReason::Unregistered));
        assert!(!block_on(hub.is_user_online("u")));
    });
}
