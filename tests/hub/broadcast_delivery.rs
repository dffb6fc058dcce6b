//! Broadcast and direct-send semantics: recipients, reports, failures, zero-copy payloads.

use crate::support::{block_on, drain, drain_texts, register_many, socket};
use nucleus_stream::{
    Bytes, OverflowPolicy, QueueConfig, SocketMessage, StreamError, StreamHub, WebSocket, channel,
};

#[test]
fn broadcast_to_missing_or_empty_room_is_ok_with_zero_recipients() {
    block_on(async {
        let hub = StreamHub::new();
        let _rxs = register_many(&hub, "s", 3).await;
        let report = hub
            .broadcast_to_room("nowhere", SocketMessage::text("x"))
            .await
            .unwrap();
        assert_eq!((report.queued, report.dropped, report.closed), (0, 0, 0));
        hub.join_room("s0", "r").await.unwrap();
        hub.leave_room("s0", "r").await.unwrap();
        let report = hub
            .broadcast_to_room_except("r", SocketMessage::text("x"), "s0")
            .await
            .unwrap();
        assert_eq!(report.total(), 0);
    });
}

#[test]
fn broadcast_reaches_exactly_the_members_once() {
    block_on(async {
        let hub = StreamHub::new();
        let mut rxs = register_many(&hub, "s", 6).await;
        for i in [0, 2, 4] {
            hub.join_room(&format!("s{i}"), "even").await.unwrap();
        }
        let report = hub
            .broadcast_to_room("even", SocketMessage::text("e"))
            .await
            .unwrap();
        assert_eq!(report.queued, 3);
        for (i, rx) in rxs.iter_mut().enumerate() {
            let expect: &[&str] = if i % 2 == 0 { &["e"] } else { &[] };
            assert_eq!(drain_texts(rx), expect, "s{i}");
        }
    });
}

#[test]
fn broadcast_except_skips_only_the_sender_and_unknown_sender_skips_nobody() {
    block_on(async {
        let hub = StreamHub::new();
        let mut rxs = register_many(&hub, "s", 3).await;
        for i in 0..3 {
            hub.join_room(&format!("s{i}"), "r").await.unwrap();
        }
        let report = hub
            .broadcast_to_room_except("r", SocketMessage::text("m"), "s1")
            .await
            .unwrap();
        assert_eq!(report.queued, 2);
        assert_eq!(drain_texts(&mut rxs[0]), ["m"]);
        assert!(drain_texts(&mut rxs[1]).is_empty());
        assert_eq!(drain_texts(&mut rxs[2]), ["m"]);
        let report = hub
            .broadcast_to_room_except("r", SocketMessage::text("n"), "not-a-socket")
            .await
            .unwrap();
        assert_eq!(report.queued, 3);
    });
}

#[test]
fn reports_count_queued_dropped_and_closed_recipients() {
    block_on(async {
        let hub = StreamHub::new();
        // ok: roomy queue; full: DropNewest with room for one; closed: receiver dropped;
        // slow: Disconnect policy with room for one (overflow closes it).
        let (ok_tx, mut ok_rx) = channel(QueueConfig::default());
        let (full_tx, mut full_rx) = channel(
            QueueConfig::default()
                .max_messages(1)
                .policy(OverflowPolicy::DropNewest),
        );
        let (closed_tx, closed_rx) = channel(QueueConfig::default());
        let (slow_tx, slow_rx) = channel(QueueConfig::default().max_messages(1));
        drop(closed_rx);
        for (id, tx) in [
            ("ok", ok_tx),
            ("full", full_tx),
            ("closed", closed_tx),
            ("slow", slow_tx),
        ] {
            hub.register(WebSocket::new(id, tx)).await.unwrap();
            hub.join_room(id, "r").await.unwrap();
        }
        let first = hub
            .broadcast_to_room("r", SocketMessage::text("1"))
            .await
            .unwrap();
        assert_eq!((first.queued, first.dropped, first.closed), (3, 0, 1));
        let second = hub
            .broadcast_to_room("r", SocketMessage::text("2"))
            .await
            .unwrap();
        assert_eq!((second.queued, second.dropped, second.closed), (1, 1, 2));
        assert_eq!(drain_texts(&mut ok_rx), ["1", "2"]);
        assert_eq!(drain_texts(&mut full_rx), ["1"]);
        assert_eq!(
            slow_rx.close_reason(),
            Some(nucleus_stream::CloseReason::SlowConsumer)
        );
        let all = hub.broadcast_all_report(SocketMessage::text("3")).await;
        // Both live queues were drained above, so both have room again.
        assert_eq!((all.queued, all.dropped, all.closed), (2, 0, 2));
    });
}

#[test]
fn send_to_a_closed_or_full_queue_is_send_failed() {
    block_on(async {
        let hub = StreamHub::new();
        let (full_tx, _full_rx) = channel(
            QueueConfig::default()
                .max_messages(1)
                .policy(OverflowPolicy::DropNewest),
        );
        let (closed_tx, closed_rx) = channel(QueueConfig::default());
        hub.register(WebSocket::new("full", full_tx)).await.unwrap();
        hub.register(WebSocket::new("closed", closed_tx))
            .await
            .unwrap();
        closed_rx.close();
        hub.send_to("full", SocketMessage::text("1")).await.unwrap();
        assert!(matches!(
            hub.send_to("full", SocketMessage::text("2")).await,
            Err(StreamError::SendFailed(ref id)) if id == "full"
        ));
        assert!(matches!(
            hub.send_to("closed", SocketMessage::text("1")).await,
            Err(StreamError::SendFailed(ref id)) if id == "closed"
        ));
    });
}

#[test]
fn broadcast_all_counts_every_registered_socket() {
    block_on(async {
        let hub = StreamHub::new();
        let mut rxs = register_many(&hub, "s", 5).await;
        assert_eq!(hub.broadcast_all(SocketMessage::text("all")).await, 5);
        for rx in &mut rxs {
            assert_eq!(drain_texts(rx), ["all"]);
        }
        hub.unregister("s3").await;
        assert_eq!(hub.broadcast_all(SocketMessage::text("all")).await, 4);
    });
}

#[test]
fn fan_out_shares_one_payload_buffer_across_recipients() {
    block_on(async {
        let hub = StreamHub::new();
        let mut rxs = register_many(&hub, "s", 50).await;
        for i in 0..50 {
            hub.join_room(&format!("s{i}"), "r").await.unwrap();
        }
        let payload = Bytes::from(vec![7u8; 4096]);
        let text = nucleus_stream::Utf8Bytes::from("shared text ".repeat(100));
        hub.broadcast_to_room("r", SocketMessage::Binary(payload.clone()))
            .await
            .unwrap();
        hub.broadcast_to_room("r", SocketMessage::text(&text))
            .await
            .unwrap();
        for rx in &mut rxs {
            let got = drain(rx);
            match &got[..] {
                [SocketMessage::Binary(b), SocketMessage::Text(t)] => {
                    assert_eq!(b.as_ptr(), payload.as_ptr(), "binary payload was copied");
                    assert_eq!(t.as_ptr(), text.as_ptr(), "text payload was copied");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
}

#[test]
fn a_socket_in_two_rooms_gets_each_rooms_broadcast_once() {
    block_on(async {
        let hub = StreamHub::new();
        let (s, mut rx) = socket("s");
        hub.register(s).await.unwrap();
        hub.join_room("s", "a").await.unwrap();
        hub.join_room("s", "b").await.unwrap();
        hub.broadcast_to_room("a", SocketMessage::text("to a"))
            .await
            .unwrap();
        hub.broadcast_to_room("b", SocketMessage::text("to b"))
            .await
            .unwrap();
        assert_eq!(drain_texts(&mut rx), ["to a", "to b"]);
    });
}

/// A hub with a room "r" of: "full" (default queue), "sender" (excluded), "small" (room for
/// two messages, dropping the newest) and "gone" (its receiver closed). Returns the receivers
/// of "full" and "small" and the closed one (kept, so that its queue stays closed rather
/// than dropped).
async fn mixed_room(hub: &StreamHub) -> [nucleus_stream::Receiver; 3] {
    let (full, full_rx) = socket("full");
    let (sender, _) = socket("sender");
    let small_config = QueueConfig::default()
        .max_messages(2)
        .policy(OverflowPolicy::DropNewest);
    let (small_tx, small_rx) = channel(small_config);
    let (gone_tx, gone_rx) = channel(QueueConfig::default());
    gone_rx.close();
    for s in [
        full,
        sender,
        WebSocket::new("small", small_tx),
        WebSocket::new("gone", gone_tx),
    ] {
        let id = s.id.to_string();
        hub.register(s).await.unwrap();
        hub.join_room(&id, "r").await.unwrap();
    }
    [full_rx, small_rx, gone_rx]
}

/// A burst published at once reaches each member in order, a member whose queue cannot take
/// all of it keeps what its policy keeps, and the report and the hub's totals are exactly
/// those of one call per message.
#[test]
fn a_burst_is_delivered_and_reported_as_one_call_per_message_would() {
    block_on(async {
        let texts = ["one", "two", "three"];
        let burst_hub = StreamHub::new();
        let [mut full, mut small, _gone] = mixed_room(&burst_hub).await;
        let published = burst_hub
            .publish_many_to_room("r", Some("sender"), texts, |text, _| {
                SocketMessage::text(text)
            })
            .await
            .unwrap();
        assert_eq!(published.position, None, "the room keeps no history");
        let report = published.report;
        assert_eq!((report.queued, report.dropped, report.closed), (5, 1, 3));
        assert_eq!(drain_texts(&mut full), texts);
        assert_eq!(drain_texts(&mut small), ["one", "two"]);

        let single_hub = StreamHub::new();
        let [mut full, mut small, _gone] = mixed_room(&single_hub).await;
        let mut summed = nucleus_stream::BroadcastReport::default();
        for text in texts {
            let r = single_hub
                .broadcast_to_room_except("r", SocketMessage::text(text), "sender")
                .await
                .unwrap();
            summed.add(r);
        }
        assert_eq!(summed, report);
        assert_eq!(drain_texts(&mut full), texts);
        assert_eq!(drain_texts(&mut small), ["one", "two"]);
        let (a, b) = (burst_hub.totals(), single_hub.totals());
        assert_eq!(
            (a.messages_out, a.bytes_out, a.dropped),
            (b.messages_out, b.bytes_out, b.dropped)
        );
        assert_eq!((a.messages_out, a.bytes_out), (5, 3 + 3 + 5 + 3 + 3));
    });
}

/// A queue that holds part of the burst already takes the rest one at a time: room for the
/// first, not the second (drop newest keeps the prefix, drop oldest the newest).
#[test]
fn a_burst_that_does_not_fit_falls_back_to_the_queue_policy_message_by_message() {
    block_on(async {
        for (policy, kept) in [
            (OverflowPolicy::DropNewest, ["old", "one"]),
            (OverflowPolicy::DropOldest, ["one", "two"]),
        ] {
            let hub = StreamHub::new();
            let config = QueueConfig::default().max_messages(2).policy(policy);
            let (tx, mut rx) = channel(config);
            hub.register(WebSocket::new("s", tx)).await.unwrap();
            hub.join_room("s", "r").await.unwrap();
            hub.broadcast_to_room("r", SocketMessage::text("old"))
                .await
                .unwrap();
            let report = hub
                .publish_many_to_room("r", None, ["one", "two"], |t, _| SocketMessage::text(t))
                .await
                .unwrap()
                .report;
            assert_eq!(drain_texts(&mut rx), kept, "{policy:?}");
            let queued = if policy == OverflowPolicy::DropNewest {
                1
            } else {
                2
            };
            assert_eq!((report.queued, report.dropped), (queued, 1), "{policy:?}");
        }
        // Disconnect: the queue is closed by the burst that does not fit, and says why.
        let hub = StreamHub::new();
        let config = QueueConfig::default()
            .max_messages(2)
            .policy(OverflowPolicy::Disconnect);
        let (tx, rx) = channel(config);
        hub.register(WebSocket::new("s", tx)).await.unwrap();
        hub.join_room("s", "r").await.unwrap();
        let report = hub
            .publish_many_to_room("r", None, ["a", "b", "c"], |t, _| SocketMessage::text(t))
            .await
            .unwrap()
            .report;
        assert_eq!((report.queued, report.closed), (2, 1));
        assert_eq!(
            rx.close_reason(),
            Some(nucleus_stream::CloseReason::SlowConsumer)
        );
    });
}

/// An empty burst sends nothing; a bad room name is refused before anything is built.
#[test]
fn an_empty_burst_is_nothing_and_a_bad_name_builds_nothing() {
    block_on(async {
        let hub = StreamHub::new();
        let mut rxs = register_many(&hub, "s", 1).await;
        hub.join_room("s0", "r").await.unwrap();
        let published = hub
            .publish_many_to_room("r", None, Vec::<&str>::new(), |t, _| SocketMessage::text(t))
            .await
            .unwrap();
        assert_eq!(published.report.total(), 0);
        assert!(drain(&mut rxs[0]).is_empty());
        let mut built = 0;
        let refused = hub
            .publish_many_to_room("", None, ["x"], |t, _| {
                built += 1;
                SocketMessage::text(t)
            })
            .await;
        assert!(
            matches!(refused, Err(StreamError::EmptyRoomName)),
            "{refused:?}"
        );
        assert_eq!(built, 0);
    });
}
