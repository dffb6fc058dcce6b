//! The outbound queue: bounds, overflow policies, closing, batching and wake-ups.

use std::time::Duration;

use nucleus_stream::{
    CloseReason, OverflowPolicy, QueueConfig, SocketMessage, TryRecvError, TrySendError, channel,
};

fn text(s: &str) -> SocketMessage {
    SocketMessage::text(s)
}

fn drain(rx: &mut nucleus_stream::Receiver) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m.as_text().unwrap().to_string());
    }
    out
}

#[test]
fn message_bound_is_exact_under_drop_newest() {
    let (tx, mut rx) = channel(
        QueueConfig::default()
            .max_messages(3)
            .policy(OverflowPolicy::DropNewest),
    );
    for s in ["a", "b", "c"] {
        tx.try_send(text(s)).unwrap();
    }
    assert_eq!(tx.try_send(text("d")), Err(TrySendError::Full(text("d"))));
    assert_eq!(tx.len(), 3);
    assert_eq!(tx.dropped(), 1);
    assert!(!rx.is_closed());
    assert_eq!(drain(&mut rx), ["a", "b", "c"]);
    tx.try_send(text("e")).unwrap();
    assert_eq!(drain(&mut rx), ["e"]);
}

#[test]
fn byte_bound_is_exact() {
    let (tx, mut rx) = channel(
        QueueConfig::default()
            .max_bytes(10)
            .policy(OverflowPolicy::DropNewest),
    );
    tx.try_send(text("12345")).unwrap();
    tx.try_send(text("67890")).unwrap();
    assert_eq!(tx.queued_bytes(), 10);
    assert!(matches!(tx.try_send(text("x")), Err(TrySendError::Full(_))));
    tx.try_send(text("")).unwrap(); // an empty message costs no bytes
    assert_eq!(drain(&mut rx), ["12345", "67890", ""]);
    assert_eq!(rx.queued_bytes(), 0);
}

#[test]
fn drop_oldest_evicts_until_the_new_message_fits() {
    let (tx, mut rx) = channel(
        QueueConfig::default()
            .max_messages(3)
            .max_bytes(5)
            .policy(OverflowPolicy::DropOldest),
    );
    for s in ["a", "b", "c"] {
        tx.try_send(text(s)).unwrap();
    }
    tx.try_send(text("d")).unwrap(); // evicts "a" (message bound)
    assert_eq!(tx.dropped(), 1);
    tx.try_send(text("eeee")).unwrap(); // 3 + 4 bytes > 5: evicts "b", then "c"
    assert_eq!(tx.dropped(), 3);
    assert_eq!(drain(&mut rx), ["d", "eeee"]);
}

#[test]
fn disconnect_policy_closes_as_slow_consumer_and_discards_the_backlog() {
    let (tx, mut rx) = channel(QueueConfig::default().max_messages(2));
    assert_eq!(
        QueueConfig::default().overflow_policy(),
        OverflowPolicy::Disconnect
    );
    tx.try_send(text("a")).unwrap();
    tx.try_send(text("b")).unwrap();
    assert!(matches!(
        tx.try_send(text("c")),
        Err(TrySendError::Closed(_))
    ));
    assert_eq!(rx.close_reason(), Some(CloseReason::SlowConsumer));
    assert!(matches!(
        tx.try_send(text("d")),
        Err(TrySendError::Closed(_))
    ));
    // What the client could not keep up with is never handed out, and is freed.
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    assert_eq!((rx.len(), rx.queued_bytes()), (0, 0));
    assert_eq!(drain(&mut rx), Vec::<String>::new());
}

#[test]
fn a_message_larger_than_the_byte_bound_is_refused_under_every_policy() {
    for policy in [
        OverflowPolicy::Disconnect,
        OverflowPolicy::DropNewest,
        OverflowPolicy::DropOldest,
    ] {
        let (tx, mut rx) = channel(QueueConfig::default().max_bytes(4).policy(policy));
        tx.try_send(text("ok")).unwrap();
        let err = tx.try_send(text("too big")).unwrap_err();
        assert_eq!(err, TrySendError::Full(text("too big")), "{policy:?}");
        assert!(
            !rx.is_closed(),
            "{policy:?}: an oversized message is not a slow consumer"
        );
        assert_eq!(drain(&mut rx), ["ok"], "{policy:?}");
    }
}

#[test]
fn the_last_sender_dropped_ends_the_queue_after_the_backlog() {
    let (tx, mut rx) = channel(QueueConfig::default());
    let tx2 = tx.clone();
    tx.try_send(text("a")).unwrap();
    drop(tx);
    assert!(!rx.is_closed(), "a clone is still alive");
    tx2.try_send(text("b")).unwrap();
    drop(tx2);
    assert_eq!(rx.close_reason(), Some(CloseReason::Closed));
    assert_eq!(drain(&mut rx), ["a", "b"]);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
}

#[test]
fn dropping_the_receiver_closes_the_queue_for_senders() {
    let (tx, rx) = channel(QueueConfig::default());
    tx.try_send(text("a")).unwrap();
    drop(rx);
    assert!(tx.is_closed());
    assert_eq!(tx.len(), 0, "the backlog is freed with the receiver");
    assert_eq!(tx.try_send(text("b")), Err(TrySendError::Closed(text("b"))));
}

#[test]
fn config_bounds_are_clamped_to_valid_values() {
    let c = QueueConfig::default().max_messages(0).max_bytes(usize::MAX);
    assert_eq!(c.message_limit(), 1);
    assert_eq!(c.byte_limit(), nucleus_stream::MAX_BYTES_LIMIT);
    let c = QueueConfig::default().max_messages(usize::MAX);
    assert_eq!(c.message_limit(), nucleus_stream::MAX_MESSAGES_LIMIT);
}

#[tokio::test]
async fn recv_many_takes_the_whole_backlog_up_to_the_limit() {
    let (tx, mut rx) = channel(QueueConfig::default());
    for i in 0..10 {
        tx.try_send(text(&i.to_string())).unwrap();
    }
    let mut buf = Vec::new();
    assert_eq!(rx.recv_many(&mut buf, 4).await, 4);
    assert_eq!(rx.recv_many(&mut buf, 100).await, 6);
    let got: Vec<_> = buf.iter().map(|m| m.as_text().unwrap()).collect();
    assert_eq!(got, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    drop(tx);
    assert_eq!(rx.recv_many(&mut buf, 100).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_receiver_is_woken_by_pushes_from_other_threads() {
    let (tx, mut rx) = channel(
        QueueConfig::default()
            .max_messages(64)
            .policy(OverflowPolicy::DropNewest),
    );
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..2_000u32 {
                    let msg = SocketMessage::binary(vec![p as u8, (i >> 8) as u8, i as u8]);
                    // Retry until there is room: the consumer is draining concurrently.
                    let mut m = msg;
                    loop {
                        match tx.try_send(m) {
                            Ok(()) => break,
                            Err(TrySendError::Full(back)) => {
                                m = back;
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                    }
                    if i % 97 == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            })
        })
        .collect();
    drop(tx);
    // Per-producer FIFO, nothing lost or duplicated, and the stream ends after the last one.
    let mut next = [0u32; 3];
    while let Some(m) = rx.recv().await {
        let b = m.payload();
        let (p, i) = (b[0] as usize, (u32::from(b[1]) << 8) | u32::from(b[2]));
        assert_eq!(i, next[p], "producer {p} out of order");
        next[p] += 1;
    }
    for h in producers {
        h.join().unwrap();
    }
    assert_eq!(next, [2_000; 3]);
}
