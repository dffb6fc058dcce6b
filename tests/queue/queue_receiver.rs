//! What a transport can rely on from `Receiver`: how each close ends the `recv` loop, and
//! cancel safety of `recv` / `recv_many` inside `tokio::select!`.

use std::time::Duration;

use nucleus_stream::{
    CloseReason, OverflowPolicy, QueueConfig, SocketMessage, StreamHub, TryRecvError, WebSocket,
    channel,
};

use crate::support::block_on;

fn text(s: &str) -> SocketMessage {
    SocketMessage::text(s)
}

/// The obvious transport loop: everything `recv` hands out, then the close reason.
async fn transport_loop(rx: &mut nucleus_stream::Receiver) -> (usize, Option<CloseReason>) {
    let mut written = 0;
    while let Some(_m) = rx.recv().await {
        written += 1;
    }
    (written, rx.close_reason())
}

#[test]
fn after_a_slow_consumer_close_the_recv_loop_ends_at_once_with_the_reason() {
    block_on(async {
        let (tx, mut rx) = channel(QueueConfig::default().max_messages(1000));
        for i in 0..1000 {
            tx.try_send(text(&i.to_string())).unwrap();
        }
        assert!(tx.try_send(text("overflow")).is_err());
        // Not 1,000 stale messages: none, and the reason to send 1008.
        assert_eq!(
            transport_loop(&mut rx).await,
            (0, Some(CloseReason::SlowConsumer))
        );
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 64).await, 0);
        assert_eq!(rx.try_recv_many(&mut buf, 64), 0);
        assert!(buf.is_empty());
        assert_eq!(rx.queued_bytes(), 0, "the backlog was freed");
    });
}

#[test]
fn a_pending_recv_is_woken_by_a_slow_consumer_close_and_returns_none() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, mut rx) = channel(QueueConfig::default().max_messages(4));
        let consumer = tokio::spawn(async move {
            // Take one message, then stall until told to read on.
            let first = rx.recv().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            (first, transport_loop(&mut rx).await)
        });
        tx.try_send(text("first")).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut n = 0;
        while tx.try_send(text("more")).is_ok() {
            n += 1;
        }
        assert_eq!(n, 4, "the bound, then the overflow");
        let (first, end) = consumer.await.unwrap();
        assert_eq!(first, Some(text("first")));
        assert_eq!(end, (0, Some(CloseReason::SlowConsumer)));
    });
}

#[test]
fn after_unregister_or_close_the_backlog_still_drains() {
    block_on(async {
        // Unregistered by the application: what was queued goes out, then the end.
        let hub = StreamHub::new();
        let (tx, mut rx) = channel(QueueConfig::default());
        hub.register(WebSocket::new("s", tx)).await.unwrap();
        for m in ["a", "b", "c"] {
            hub.send_to("s", text(m)).await.unwrap();
        }
        assert!(hub.unregister("s").await.is_some());
        assert_eq!(
            transport_loop(&mut rx).await,
            (3, Some(CloseReason::Unregistered))
        );

        // Every sender dropped: same.
        let (tx, mut rx) = channel(QueueConfig::default());
        tx.try_send(text("x")).unwrap();
        drop(tx);
        assert_eq!(
            transport_loop(&mut rx).await,
            (1, Some(CloseReason::Closed))
        );

        // Closed by the consumer: same.
        let (tx, mut rx) = channel(QueueConfig::default());
        tx.try_send(text("y")).unwrap();
        rx.close();
        assert_eq!(rx.try_recv(), Ok(text("y")));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    });
}

#[test]
fn other_policies_never_close_so_the_loop_keeps_what_fits() {
    block_on(async {
        let (tx, mut rx) = channel(
            QueueConfig::default()
                .max_messages(2)
                .policy(OverflowPolicy::DropOldest),
        );
        for m in ["a", "b", "c"] {
            tx.try_send(text(m)).unwrap();
        }
        drop(tx);
        assert_eq!(
            transport_loop(&mut rx).await,
            (2, Some(CloseReason::Closed))
        );
    });
}

#[test]
fn recv_loses_nothing_when_select_picks_the_other_branch() {
    block_on(async {
        let (tx, mut rx) = channel(QueueConfig::default());
        let mut got = Vec::new();
        let mut ticks = 0;
        for i in 0..200 {
            if i % 3 == 0 {
                tx.try_send(text(&i.to_string())).unwrap();
            }
            // The other branch is always ready: `biased` makes it win whenever both are, so
            // most `recv` futures are dropped unfinished (many after being polled once).
            tokio::select! {
                biased;
                _ = std::future::ready(()), if i % 2 == 0 => ticks += 1,
                m = rx.recv() => got.push(m.unwrap()),
                _ = tokio::task::yield_now() => ticks += 1,
            }
        }
        drop(tx);
        while let Some(m) = rx.recv().await {
            got.push(m);
        }
        let expected: Vec<_> = (0..200)
            .filter(|i| i % 3 == 0)
            .map(|i| text(&i.to_string()))
            .collect();
        assert_eq!(got, expected, "every message exactly once, in order");
        assert!(ticks > 0);
    });
}

#[test]
fn recv_many_is_cancel_safe_even_after_being_polled_pending() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, mut rx) = channel(QueueConfig::default());
        let mut buf = Vec::new();
        // A recv_many that is polled (pending: nothing queued) and then cancelled by a timer.
        tokio::select! {
            n = rx.recv_many(&mut buf, 10) => panic!("nothing was queued, got {n}"),
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        assert!(buf.is_empty());
        for m in ["a", "b", "c"] {
            tx.try_send(text(m)).unwrap();
        }
        // Cancelled again, this time before its first poll: nothing taken.
        tokio::select! {
            biased;
            () = std::future::ready(()) => {}
            _ = rx.recv_many(&mut buf, 10) => panic!("the ready branch is biased first"),
        }
        assert!(buf.is_empty());
        assert_eq!(rx.len(), 3);
        assert_eq!(rx.recv_many(&mut buf, 10).await, 3);
        assert_eq!(buf, [text("a"), text("b"), text("c")]);
    });
}
