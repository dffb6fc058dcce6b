//! Presence events per user (not per connection), their order under concurrency, lag, and
//! diffs; plus the introspection calls: `broadcast_to_rooms`, queue stats, totals.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::{block_on, drain_texts, socket, user_socket};
use nucleus_stream::{
    HubConfig, OverflowPolicy, PresenceDiff, PresenceEvent, PresenceKey, PresenceRecvError,
    QueueConfig, SocketMessage, StreamError, StreamHub, WebSocket, channel,
};

fn user(u: &str) -> PresenceKey {
    PresenceKey::User(u.into())
}

fn joined(room: &str, member: PresenceKey) -> PresenceEvent {
    PresenceEvent::Joined {
        room: room.into(),
        member,
    }
}

fn left(room: &str, member: PresenceKey) -> PresenceEvent {
    PresenceEvent::Left {
        room: room.into(),
        member,
    }
}

fn online(u: &str) -> PresenceEvent {
    PresenceEvent::Online { user: u.into() }
}

fn offline(u: &str) -> PresenceEvent {
    PresenceEvent::Offline { user: u.into() }
}

fn drain(sub: &mut nucleus_stream::PresenceSubscription) -> Vec<PresenceEvent> {
    let mut out = Vec::new();
    while let Some(e) = sub.try_recv().expect("no lag") {
        out.push(e);
    }
    out
}

#[test]
fn events_are_per_user_first_device_in_and_last_device_out() {
    block_on(async {
        let hub = StreamHub::new();
        let mut sub = hub.subscribe_presence();
        let (phone, _p) = user_socket("phone", "alice");
        let (laptop, _l) = user_socket("laptop", "alice");
        let (anon, _a) = socket("anon");
        hub.register(phone).await.unwrap();
        hub.register(laptop).await.unwrap();
        hub.register(anon).await.unwrap();
        hub.join_room("phone", "r").await.unwrap();
        hub.join_room("laptop", "r").await.unwrap();
        hub.join_room("anon", "r").await.unwrap();
        assert_eq!(
            drain(&mut sub),
            [
                online("alice"),
                joined("r", user("alice")),
                joined("r", PresenceKey::Socket("anon".into())),
            ],
            "alice's second device is no event, an anonymous socket is its own presence"
        );
        assert_eq!(
            hub.room_presence("r").await,
            [user("alice"), PresenceKey::Socket("anon".into())]
        );

        hub.leave_room("phone", "r").await.unwrap();
        assert!(drain(&mut sub).is_empty(), "the laptop is still in r");
        let removed = hub.unregister("laptop").await.unwrap();
        assert_eq!(removed.rooms.len(), 1);
        assert!(!removed.went_offline, "the phone is still connected");
        assert_eq!(drain(&mut sub), [left("r", user("alice"))]);
        let removed = hub.unregister("phone").await.unwrap();
        assert!(removed.went_offline);
        assert_eq!(drain(&mut sub), [offline("alice")]);
        hub.unregister("anon").await;
        assert_eq!(
            drain(&mut sub),
            [left("r", PresenceKey::Socket("anon".into()))]
        );
    });
}

#[test]
fn a_subscriber_that_falls_behind_is_told_how_many_events_it_lost() {
    block_on(async {
        let hub = StreamHub::with_config(HubConfig::default().presence_buffer(4));
        let mut sub = hub.subscribe_presence();
        for i in 0..10 {
            let (s, _rx) = user_socket(&format!("s{i}"), &format!("u{i}"));
            hub.register(s).await.unwrap();
        }
        assert_eq!(sub.try_recv(), Err(PresenceRecvError::Lagged(6)));
        let rest: Vec<_> = std::iter::from_fn(|| sub.try_recv().unwrap()).collect();
        assert_eq!(
            rest,
            (6..10)
                .map(|i| online(&format!("u{i}")))
                .collect::<Vec<_>>()
        );

        // Through a diff: the loss is reported with what was kept.
        for i in 10..20 {
            let (s, _rx) = user_socket(&format!("s{i}"), &format!("u{i}"));
            hub.register(s).await.unwrap();
        }
        let mut diff = PresenceDiff::new();
        assert_eq!(sub.drain_into(&mut diff), Some(4));
        assert_eq!(diff.missed(), 6);
        assert_eq!(diff.online().count(), 4);
    });
}

#[cfg(feature = "server")]
#[tokio::test]
async fn recv_diff_coalesces_a_window_and_cancels_what_was_undone() {
    let hub = StreamHub::new();
    let mut sub = hub.subscribe_presence();
    let (a, _a) = user_socket("a", "alice");
    let (b, _b) = user_socket("b", "bob");
    hub.register(a).await.unwrap();
    hub.register(b).await.unwrap();
    hub.join_room("a", "r").await.unwrap();
    hub.join_room("b", "r").await.unwrap();
    hub.leave_room("b", "r").await.unwrap();
    let window = std::time::Duration::from_millis(100);
    let diff = sub.recv_diff(window).await.expect("hub alive");
    assert_eq!(diff.online().collect::<Vec<_>>(), ["alice", "bob"]);
    let r = diff.room("r").expect("r changed");
    assert_eq!(r.joins().collect::<Vec<_>>(), [&user("alice")]);
    assert_eq!(r.leaves().count(), 0, "bob joined and left: nothing");

    // What is buffered when the window closes is in the diff; what comes after, in the next.
    hub.leave_room("a", "r").await.unwrap();
    hub.unregister("b").await;
    let diff = sub.recv_diff(window).await.unwrap();
    assert_eq!(diff.offline().collect::<Vec<_>>(), ["bob"]);
    assert_eq!(
        diff.room("r").unwrap().leaves().collect::<Vec<_>>(),
        [&user("alice")]
    );
    hub.unregister("a").await;
    let diff = sub.recv_diff(window).await.unwrap();
    assert_eq!(diff.offline().collect::<Vec<_>>(), ["alice"]);
    assert!(diff.room("r").is_none());
    drop(hub);
    assert!(sub.recv_diff(window).await.is_none(), "the hub is gone");
}

/// Four threads move the devices of three users in and out of two rooms; a subscriber's
/// events, folded in order, must end exactly at the hub's final presence — which holds only
/// if the events of one (room, user) are emitted in the order their transitions happened.
#[test]
fn under_concurrent_churn_the_event_stream_folds_to_the_final_presence() {
    let hub = StreamHub::with_config(HubConfig::default().presence_buffer(1 << 20));
    let mut sub = hub.subscribe_presence();
    let users = ["u0", "u1", "u2"];
    let mut handles = Vec::new();
    for t in 0..4 {
        let hub = hub.clone();
        handles.push(std::thread::spawn(move || {
            block_on(async {
                let mut rxs = Vec::new();
                for (k, u) in users.iter().enumerate() {
                    let (tx, rx) = channel(QueueConfig::default());
                    let id = format!("t{t}-{k}");
                    hub.register(WebSocket::authenticated(id.as_str(), *u, tx))
                        .await
                        .unwrap();
                    rxs.push(rx);
                }
                for i in 0..2_000usize {
                    let id = format!("t{t}-{}", i % 3);
                    let room = ["x", "y"][(i / 3 + t) % 2];
                    if (i * 7 + t) % 3 == 0 {
                        hub.leave_room(&id, room).await.unwrap();
                    } else {
                        hub.join_room(&id, room).await.unwrap();
                    }
                    if i % 500 == 499 && t % 2 == 0 {
                        // A device drops and comes back.
                        hub.unregister(&id).await.unwrap();
                        let (tx, rx) = channel(QueueConfig::default());
                        let u = users[i % 3];
                        hub.register(WebSocket::authenticated(id.as_str(), u, tx))
                            .await
                            .unwrap();
                        rxs.push(rx);
                    }
                }
                drop(rxs);
            })
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    let mut rooms: BTreeMap<String, BTreeSet<PresenceKey>> = BTreeMap::new();
    let mut online_now: BTreeSet<String> = BTreeSet::new();
    for event in drain(&mut sub) {
        match event {
            PresenceEvent::Joined { room, member } => {
                assert!(rooms.entry(room.to_string()).or_default().insert(member));
            }
            PresenceEvent::Left { room, member } => {
                assert!(rooms.entry(room.to_string()).or_default().remove(&member));
            }
            PresenceEvent::Online { user } => assert!(online_now.insert(user.to_string())),
            PresenceEvent::Offline { user } => assert!(online_now.remove(&*user)),
            other => panic!("unexpected {other:?}"),
        }
    }
    block_on(async {
        for room in ["x", "y"] {
            let want: BTreeSet<PresenceKey> = hub.room_presence(room).await.into_iter().collect();
            assert_eq!(rooms.remove(room).unwrap_or_default(), want, "room {room}");
        }
        let want: BTreeSet<String> = hub.online_users().await.into_iter().collect();
        assert_eq!(online_now, want);
    });
}

#[test]
fn broadcast_to_rooms_reaches_each_recipient_once() {
    block_on(async {
        let hub = StreamHub::new();
        let mut rxs = Vec::new();
        for id in ["a", "b", "c", "d"] {
            let (s, rx) = socket(id);
            hub.register(s).await.unwrap();
            rxs.push(rx);
        }
        for (id, rooms) in [
            ("a", &["x", "y"][..]),
            ("b", &["y"]),
            ("c", &["x", "y", "z"]),
        ] {
            for r in rooms {
                hub.join_room(id, r).await.unwrap();
            }
        }
        let report = hub
            .broadcast_to_rooms(["x", "y", "z", "nobody"], SocketMessage::text("m"), None)
            .await
            .unwrap();
        assert_eq!(report.queued, 3, "a, b, c once each; d is in none");
        let report = hub
            .broadcast_to_rooms(vec!["x", "y"], SocketMessage::text("n"), Some("c"))
            .await
            .unwrap();
        assert_eq!(report.queued, 2);
        let got: Vec<Vec<String>> = rxs.iter_mut().map(drain_texts).collect();
        assert_eq!(got, [vec!["m", "n"], vec!["m", "n"], vec!["m"], vec![]]);

        // A bad name anywhere: an error, and nothing sent.
        let err = hub
            .broadcast_to_rooms(["x", ""], SocketMessage::text("o"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StreamError::EmptyRoomName));
        assert!(rxs.iter_mut().all(|rx| drain_texts(rx).is_empty()));
    });
}

#[test]
fn queue_stats_name_the_deepest_queues_and_totals_count_every_delivery() {
    block_on(async {
        let hub = StreamHub::new();
        let mut rxs = Vec::new();
        for i in 0..10 {
            let queue = QueueConfig::default()
                .max_messages(8)
                .policy(OverflowPolicy::DropNewest);
            let (tx, rx) = channel(queue);
            hub.register(WebSocket::new(format!("s{i}"), tx))
                .await
                .unwrap();
            hub.join_room(&format!("s{i}"), "all").await.unwrap();
            rxs.push(rx);
        }
        // s3 and s7 never read; everybody else drains after each broadcast.
        for k in 0..5 {
            hub.broadcast_to_room("all", SocketMessage::text(format!("m{k}")))
                .await
                .unwrap();
            // Refused (SendFailed) once the queue is full: counted as dropped.
            hub.send_to("s7", SocketMessage::text("extra")).await.ok();
            for (i, rx) in rxs.iter_mut().enumerate() {
                if i != 3 && i != 7 {
                    drain_texts(rx);
                }
            }
        }
        let deepest = hub.deepest_queues(2).await;
        let ids: Vec<&str> = deepest.iter().map(|s| &*s.id).collect();
        assert_eq!(ids, ["s7", "s3"]);
        assert_eq!(deepest[0].queued_messages, 8);
        assert_eq!(deepest[0].dropped, 2, "a full queue of 8 dropped 2 of 10");
        assert_eq!(deepest[1].queued_messages, 5);
        assert_eq!(deepest[1].queued_bytes, 10);
        let s0 = hub.socket_stats("s0").await.unwrap();
        assert_eq!((s0.queued_messages, s0.queued_bytes, s0.dropped), (0, 0, 0));
        assert!(hub.socket_stats("ghost").await.is_none());

        let totals = hub.totals();
        assert_eq!(totals.messages_out, 5 * 10 + 5 - 2, "every queued delivery");
        assert_eq!(
            totals.bytes_out,
            49 * 2 + 4 * 5,
            "49 \"mK\" and 4 \"extra\""
        );
        assert_eq!(totals.dropped, 2);
    });
}
