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
