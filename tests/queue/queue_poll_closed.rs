//! `Receiver::poll_closed` sees a close without taking messages, and wakes on it.

use std::future::poll_fn;
use std::task::Poll;

use nucleus_stream::{CloseReason, OverflowPolicy, QueueConfig, SocketMessage, channel};

#[tokio::test]
async fn poll_closed_reports_slow_consumer_without_taking_messages() {
    let (tx, mut rx) = channel(
        QueueConfig::default()
            .max_messages(2)
            .policy(OverflowPolicy::Disconnect),
    );
    tx.try_send(SocketMessage::text("a")).unwrap();
    // Open: pending, and nothing is taken.
    let open = poll_fn(|cx| Poll::Ready(rx.poll_closed(cx))).await;
    assert!(open.is_pending());
    assert_eq!(rx.len(), 1);

    let waiter = tokio::spawn(async move {
        let reason = poll_fn(|cx| rx.poll_closed(cx)).await;
        (reason, rx.len())
    });
    tokio::task::yield_now().await;
    tx.try_send(SocketMessage::text("b")).unwrap();
    assert!(tx.try_send(SocketMessage::text("c")).is_err()); // overflow closes the queue
    let (reason, queued) = waiter.await.unwrap();
    assert_eq!(reason, CloseReason::SlowConsumer);
    assert_eq!(queued, 2, "the backlog is still there, untouched");
}
