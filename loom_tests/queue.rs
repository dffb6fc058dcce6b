//! The outbound queue: model (g) of the loom suite. Producers call `Sender::try_send`, the
//! consumer `Receiver::recv` through loom's `block_on`, so a consumer that parks and is never
//! woken shows up as a loom deadlock.

use crate::support::*;

fn bounded(max_messages: usize, policy: OverflowPolicy) -> (Sender, Receiver) {
    channel(
        QueueConfig::default()
            .max_messages(max_messages)
            .policy(policy),
    )
}

/// Whether `got` holds `producer`'s messages in the order they were sent.
fn fifo_per_producer(got: &[&str], producer: &[&str]) -> bool {
    let seen: Vec<&str> = got
        .iter()
        .copied()
        .filter(|m| producer.contains(m))
        .collect();
    let mut order = producer.iter().filter(|m| seen.contains(m));
    seen.iter().all(|m| order.next() == Some(m))
}

/// Sends each message in order; returns those the queue accepted.
fn send_all(tx: Sender, msgs: &[&'static str]) -> Vec<&'static str> {
    let mut ok = Vec::new();
    for &m in msgs {
        if tx.try_send(msg(m)).is_ok() {
            ok.push(m);
        }
    }
    ok
}

/// Two producers on `tx_a`'s queue: one sends "a1" then "a2", the other "b1"; each hands its
/// `Sender` back, so that no close can stand in for a wake-up.
fn spawn_a1_a2_and_b1(tx_a: Sender) -> (thread::JoinHandle<Sender>, thread::JoinHandle<Sender>) {
    let tx_b = tx_a.clone();
    let pa = thread::spawn(move || {
        tx_a.try_send(msg("a1")).unwrap();
        tx_a.try_send(msg("a2")).unwrap();
        tx_a
    });
    let pb = thread::spawn(move || {
        tx_b.try_send(msg("b1")).unwrap();
        tx_b
    });
    (pa, pb)
}

/// What [`spawn_a1_a2_and_b1`]'s consumer must have: the three messages, each once, in
/// order per producer.
fn assert_a1_a2_and_b1(got: &[SocketMessage]) {
    let got = texts(got);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(fifo_per_producer(&got, &["a1", "a2"]), "{got:?}");
    assert!(fifo_per_producer(&got, &["b1"]), "{got:?}");
}

/// (g) Two producers and a consumer that parks whenever the queue is empty: every message
/// arrives exactly once, in order per producer. The producers keep their `Sender`s (they hand
/// them back) so no close can stand in for a missed wake-up on push: a consumer that is not
/// woken by a push is a loom deadlock.
#[test]
fn g_two_producers_one_parking_consumer() {
    model(|| {
        let (tx_a, mut rx) = bounded(8, OverflowPolicy::Disconnect);
        let (pa, pb) = spawn_a1_a2_and_b1(tx_a);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(block_on(rx.recv()).expect("the queue is open"));
        }
        assert_a1_a2_and_b1(&got);
        let senders = (pa.join().unwrap(), pb.join().unwrap());
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(senders);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
        assert_eq!(rx.close_reason(), Some(CloseReason::Closed));
    });
}

/// (g) The writer's batched pops: the consumer waits for one message, then takes whatever is
/// queued with `try_recv_many`, whose pops give their room back with one read-modify-write
/// at the end, and parks again. A producer whose reservation saw the batch still counted
/// skipped its wake-up; the consumer must still see its message (a missed one is a loom
/// deadlock), every message arrives once, in order per producer, and all room comes back.
#[test]
fn g_batched_pops_then_park() {
    model(|| {
        let (tx_a, mut rx) = bounded(8, OverflowPolicy::Disconnect);
        let (pa, pb) = spawn_a1_a2_and_b1(tx_a);
        let mut got = Vec::new();
        while got.len() < 3 {
            got.push(block_on(rx.recv()).expect("the queue is open"));
            rx.try_recv_many(&mut got, 8);
        }
        assert_a1_a2_and_b1(&got);
        let senders = (pa.join().unwrap(), pb.join().unwrap());
        assert_eq!((rx.len(), rx.queued_bytes()), (0, 0));
        drop(senders);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    });
}

/// Two threads on the hub: one publishes the burst "a1", "a2" to room "r" with
/// `publish_many_to_room` (its report comes back), the other sends "b1" to socket "t".
fn spawn_burst_and_single(
    hub: &StreamHub,
) -> (
    thread::JoinHandle<BroadcastReport>,
    thread::JoinHandle<Result<(), StreamError>>,
) {
    let h = hub.clone();
    let burst = thread::spawn(move || {
        let published = h.publish_many_to_room("r", None, ["a1", "a2"], |t, _| msg(t));
        block_on(published).unwrap().report
    });
    let h = hub.clone();
    let single = thread::spawn(move || block_on(h.send_to("t", msg("b1"))));
    (burst, single)
}

/// (g) A burst pushed with one reservation (`publish_many_to_room`: both messages counted
/// by one read-modify-write, one wake-up after the last is stored) racing another thread's
/// single push, while the consumer parks whenever its queue is empty: it is woken (a missed
/// wake-up is a loom deadlock), gets the three messages once each, the burst in order, and
/// all room comes back.
#[test]
fn g_burst_and_single_push_one_parking_consumer() {
    model(|| {
        let hub = hub();
        let mut rx = registered(&hub, "t");
        block_on(hub.join_room("t", "r")).unwrap();
        let (burst, single) = spawn_burst_and_single(&hub);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(block_on(rx.recv()).expect("the hub keeps the queue open"));
        }
        assert_a1_a2_and_b1(&got);
        assert_eq!(burst.join().unwrap().queued, 2);
        assert!(single.join().unwrap().is_ok());
        assert_eq!((rx.len(), rx.queued_bytes()), (0, 0));
    });
}

/// (g) A burst at the queue's bound (room for two, drop newest) racing a single push and a
/// consumer's pop: the burst is reserved whole or falls back to one push per message, so
/// whatever the interleaving, each report counts what was queued, the queue holds exactly
/// the accepted messages (each once, in order per producer) and its room comes back.
#[test]
fn g_burst_at_the_bound_falls_back_message_by_message() {
    model(|| {
        let hub = hub();
        let (tx, mut rx) = bounded(2, OverflowPolicy::DropNewest);
        block_on(hub.register(WebSocket::new("t", tx))).unwrap();
        block_on(hub.join_room("t", "r")).unwrap();
        let (burst, single) = spawn_burst_and_single(&hub);
        let mut got = Vec::new();
        if let Ok(m) = rx.try_recv() {
            got.push(m);
        }
        let report = burst.join().unwrap();
        let single = single.join().unwrap().is_ok();
        got.extend(drain(&mut rx));
        assert_eq!(report.queued + report.dropped, 2, "{report:?}");
        assert_eq!(got.len(), report.queued + usize::from(single));
        let got = texts(&got);
        assert!(fifo_per_producer(&got, &["a1", "a2"]), "{got:?}");
        assert_eq!((rx.len(), rx.queued_bytes()), (0, 0));
    });
}

/// (g) A consumer parks on an empty queue and a producer's push must wake it (the producer
/// keeps its `Sender`, so no close can stand in for the wake); then it parks again and
/// another thread's close must wake it to see the end.
#[test]
fn g_parked_consumer_is_woken_by_push_and_close() {
    model(|| {
        let (tx, mut rx) = bounded(2, OverflowPolicy::Disconnect);
        let p = thread::spawn(move || {
            tx.try_send(msg("m")).unwrap();
            tx
        });
        assert_eq!(block_on(rx.recv()), Some(msg("m")));
        let tx = p.join().unwrap();
        let c = thread::spawn(move || tx.close());
        assert_eq!(block_on(rx.recv()), None);
        c.join().unwrap();
        assert_eq!(rx.close_reason(), Some(CloseReason::Closed));
    });
}

/// (g) `DropNewest` exactly at the bound: three pushes into a queue of two from two
/// producers: exactly two are accepted and one refused as `Full`, counted once.
#[test]
fn g_drop_newest_exact_at_bound() {
    model(|| {
        let (tx_a, mut rx) = bounded(2, OverflowPolicy::DropNewest);
        let tx_b = tx_a.clone();
        let pa = thread::spawn(move || send_all(tx_a, &["a1", "a2"]));
        let ok_b = send_all(tx_b, &["b1"]);
        let ok_a = pa.join().unwrap();
        assert_eq!(ok_a.len() + ok_b.len(), 2);
        assert_eq!(rx.dropped(), 1);
        let got = drain(&mut rx);
        let got = texts(&got);
        let mut expected: Vec<&str> = ok_a.iter().chain(&ok_b).copied().collect();
        expected.sort();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, expected);
        assert!(fifo_per_producer(&got, &["a1", "a2"]), "{got:?}");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed), "senders are gone");
    });
}

/// (g) `Disconnect` at the bound with a concurrent consumer: what the consumer receives was
/// accepted, once and in order per producer; without an overflow it receives every accepted
/// message; once a push fails, the queue is closed as a slow consumer, later pushes fail too,
/// and the consumer sees the end at once (the backlog is discarded).
#[test]
fn g_disconnect_at_bound_with_consumer() {
    model(|| {
        let (tx_a, mut rx) = bounded(1, OverflowPolicy::Disconnect);
        let tx_b = tx_a.clone();
        let pa = thread::spawn(move || {
            let mut results = Vec::new();
            for m in ["a1", "a2"] {
                results.push((m, tx_a.try_send(msg(m))));
            }
            results
        });
        let pb = thread::spawn(move || tx_b.try_send(msg("b1")));
        let mut got = Vec::new();
        while let Some(m) = block_on(rx.recv()) {
            got.push(m);
        }
        let results_a = pa.join().unwrap();
        let result_b = pb.join().unwrap();
        let got = texts(&got);
        let mut failed = false;
        let mut accepted: Vec<&str> = Vec::new();
        for (m, r) in &results_a {
            match r {
                Ok(()) => {
                    assert!(!failed, "a push succeeded after the queue closed");
                    accepted.push(m);
                }
                Err(TrySendError::Closed(_)) => failed = true,
                Err(e) => panic!("{e:?}"),
            }
        }
        match &result_b {
            Ok(()) => accepted.push("b1"),
            Err(TrySendError::Closed(_)) => failed = true,
            Err(e) => panic!("{e:?}"),
        }
        let mut sorted = got.clone();
        sorted.sort();
        accepted.sort();
        assert!(fifo_per_producer(&got, &["a1", "a2"]), "{got:?}");
        let reason = rx.close_reason();
        if failed {
            // Received before the close: accepted ones, each once; the rest was discarded.
            assert!(sorted.iter().all(|m| accepted.contains(m)), "{got:?}");
            sorted.dedup();
            assert_eq!(sorted.len(), got.len(), "{got:?}");
            assert_eq!(reason, Some(CloseReason::SlowConsumer));
        } else {
            assert_eq!(sorted, accepted);
            assert_eq!(reason, Some(CloseReason::Closed));
            assert_eq!(got.len(), 3);
        }
    });
}

/// (g) `Disconnect` exactly at the bound without a consumer: of three pushes into a queue of
/// two, exactly the third is refused and closes the queue as a slow consumer; nothing of the
/// backlog is handed out after that.
#[test]
fn g_disconnect_exact_at_bound() {
    model(|| {
        let (tx_a, mut rx) = bounded(2, OverflowPolicy::Disconnect);
        let tx_b = tx_a.clone();
        let pa = thread::spawn(move || send_all(tx_a, &["a1", "a2"]));
        let ok_b = send_all(tx_b, &["b1"]);
        let ok_a = pa.join().unwrap();
        assert_eq!(ok_a.len() + ok_b.len(), 2);
        assert_eq!(rx.close_reason(), Some(CloseReason::SlowConsumer));
        // The backlog of a slow consumer is discarded, not delivered.
        let got = drain(&mut rx);
        assert!(got.is_empty(), "{:?}", texts(&got));
        assert_eq!(rx.len(), 0);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    });
}

/// (g) `DropOldest` exactly at the bound: three pushes into a queue of two are all accepted,
/// exactly one message is evicted, and what stays is in order per producer.
#[test]
fn g_drop_oldest_exact_at_bound() {
    model(|| {
        let (tx_a, mut rx) = bounded(2, OverflowPolicy::DropOldest);
        let tx_b = tx_a.clone();
        let pa = thread::spawn(move || send_all(tx_a, &["a1", "a2"]));
        let ok_b = send_all(tx_b, &["b1"]);
        let ok_a = pa.join().unwrap();
        assert_eq!(ok_a, ["a1", "a2"]);
        assert_eq!(ok_b, ["b1"]);
        assert_eq!(rx.dropped(), 1);
        let got = drain(&mut rx);
        let got = texts(&got);
        assert_eq!(got.len(), 2, "{got:?}");
        // The evicted message is the oldest: a1 cannot stay while a2 goes.
        assert!(got.contains(&"a2"), "{got:?}");
        assert!(fifo_per_producer(&got, &["a1", "a2"]), "{got:?}");
    });
}

/// (g) `DropOldest` at a bound of one with a concurrent consumer (which can pop a message
/// the producer is about to evict, the producer then waits for the consumer's release):
/// nothing is duplicated, what is received is in order, and received + evicted = sent.
#[test]
fn g_drop_oldest_with_consumer() {
    model(|| {
        let (tx, mut rx) = bounded(1, OverflowPolicy::DropOldest);
        let p = thread::spawn(move || send_all(tx, &["a1", "a2", "a3"]));
        let mut got = Vec::new();
        while let Some(m) = block_on(rx.recv()) {
            got.push(m);
            assert!(rx.len() <= 1, "over the bound");
        }
        let ok = p.join().unwrap();
        assert_eq!(
            (rx.len(), rx.queued_bytes()),
            (0, 0),
            "counts match the items"
        );
        let got = texts(&got);
        assert_eq!(got.len() as u64 + rx.dropped(), ok.len() as u64, "{got:?}");
        assert!(
            got.contains(&"a3") || !ok.contains(&"a3"),
            "the newest is never evicted"
        );
        for m in ["a1", "a2", "a3"] {
            assert!(count_str(&got, m) <= 1, "{got:?}");
        }
        assert!(fifo_per_producer(&got, &["a1", "a2", "a3"]), "{got:?}");
    });
}

fn count_str(got: &[&str], m: &str) -> usize {
    got.iter().filter(|g| **g == m).count()
}
