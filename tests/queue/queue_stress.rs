//! Real threads on one queue: producers pushing, the consumer draining, and under
//! `OverflowPolicy::DropOldest` producers evicting (popping) at the same time. Every message
//! is accounted for exactly once and arrives in per-producer order. (Not timed: it asserts
//! what arrived, never how fast.)

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nucleus_stream::{OverflowPolicy, QueueConfig, SocketMessage, TrySendError, channel};

const PRODUCERS: usize = 4;
const PER_PRODUCER: usize = 20_000;

fn label(producer: usize, i: usize) -> SocketMessage {
    SocketMessage::text(format!("{producer}:{i}"))
}

fn parse(msg: &SocketMessage) -> (usize, usize) {
    let text = msg.as_text().expect("text");
    let (p, i) = text.split_once(':').expect("p:i");
    (p.parse().unwrap(), i.parse().unwrap())
}

/// What one run saw.
struct Run {
    /// `(producer, index)` of every push the queue accepted.
    accepted: Vec<(usize, usize)>,
    /// What the consumer received, in order.
    received: Vec<(usize, usize)>,
    /// Pushes refused as `Full`.
    refused: usize,
    /// The queue's `dropped()` count at the end (evictions and refusals).
    dropped: u64,
}

/// Runs the producers and a consumer thread.
fn run(config: QueueConfig) -> Run {
    let (tx, mut rx) = channel(config);
    let finished = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = tx.clone();
            let finished = Arc::clone(&finished);
            std::thread::spawn(move || {
                let (mut accepted, mut refused) = (Vec::new(), 0);
                for i in 0..PER_PRODUCER {
                    match tx.try_send(label(p, i)) {
                        Ok(()) => accepted.push((p, i)),
                        Err(TrySendError::Full(_)) => refused += 1,
                        Err(e) => panic!("producer {p}: {e}"),
                    }
                }
                finished.fetch_add(1, Ordering::Release);
                (accepted, refused)
            })
        })
        .collect();
    drop(tx);
    let consumer = std::thread::spawn(move || {
        let mut received = Vec::new();
        // Blocking receive on a current-thread runtime: parks and is woken by pushes.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            while let Some(m) = rx.recv().await {
                received.push(parse(&m));
            }
        });
        (received, rx.dropped())
    });
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for p in producers {
        let (a, r) = p.join().unwrap();
        accepted.extend(a);
        refused += r;
    }
    let (received, dropped) = consumer.join().unwrap();
    Run {
        accepted,
        received,
        refused,
        dropped,
    }
}

fn assert_per_producer_order(received: &[(usize, usize)]) {
    let mut last = [None::<usize>; PRODUCERS];
    for &(p, i) in received {
        assert!(
            last[p].is_none_or(|l| l < i),
            "producer {p}: {i} arrived after {:?}",
            last[p]
        );
        last[p] = Some(i);
    }
}

#[test]
fn every_message_arrives_exactly_once_in_producer_order() {
    let Run {
        accepted,
        received,
        refused,
        dropped,
    } = run(QueueConfig::default()
        .max_messages(1 << 20)
        .max_bytes(1 << 30));
    assert_eq!((refused, dropped), (0, 0));
    assert_eq!(accepted.len(), PRODUCERS * PER_PRODUCER);
    assert_per_producer_order(&received);
    let unique: HashSet<_> = received.iter().copied().collect();
    assert_eq!(unique.len(), received.len(), "a message arrived twice");
    assert_eq!(unique, accepted.into_iter().collect::<HashSet<_>>());
}

#[test]
fn drop_oldest_producers_evicting_while_the_consumer_drains() {
    let Run {
        accepted,
        received,
        refused,
        dropped,
    } = run(QueueConfig::default()
        .max_messages(16)
        .policy(OverflowPolicy::DropOldest));
    assert_per_producer_order(&received);
    let unique: HashSet<_> = received.iter().copied().collect();
    assert_eq!(unique.len(), received.len(), "a message arrived twice");
    let accepted_set: HashSet<_> = accepted.iter().copied().collect();
    assert!(
        unique.is_subset(&accepted_set),
        "received a refused message"
    );
    // `dropped` counts evictions and refusals: every accepted message was either received or
    // evicted, exactly once.
    let evicted = dropped as usize - refused;
    assert_eq!(
        received.len() + evicted,
        accepted.len(),
        "{} received + {evicted} evicted != {} accepted ({refused} refused)",
        received.len(),
        accepted.len()
    );
}
