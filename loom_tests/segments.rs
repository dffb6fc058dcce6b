//! The outbound queue's item storage, `Segments` (`src/queue/segments.rs`): model (m) of the
//! loom suite. Under loom a segment holds 2 slots, so every model below crosses segment
//! boundaries and retires segments as the queue drains (and refills).

use crate::support::*;
use loom::sync::Arc;
use nucleus_stream::Segments;

/// Whether `got` holds each producer's values in increasing order.
fn in_order(got: &[(u8, u8)]) -> bool {
    let mut last = [None::<u8>; 4];
    got.iter().all(|&(p, i)| {
        let ok = last[p as usize].is_none_or(|l| l < i);
        last[p as usize] = Some(i);
        ok
    })
}

/// (m) Two producers push two values each while the consumer pops three times: every value
/// arrives exactly once, in order per producer (what the concurrent pops missed is drained
/// after the join). Segments are installed, linked, left and retired concurrently with the
/// pushes. (The consumer does not spin until it has everything: under loom such a spin
/// multiplies the executions past minutes.)
#[test]
fn m_two_producers_one_consumer_across_segments() {
    model(|| {
        let q = Arc::new(Segments::new());
        let producers: Vec<_> = (0..2u8)
            .map(|p| {
                let q = Arc::clone(&q);
                thread::spawn(move || {
                    q.push((p, 0));
                    q.push((p, 1));
                })
            })
            .collect();
        let mut got = Vec::new();
        for _ in 0..3 {
            // SAFETY: the main thread is the only popper.
            got.extend(unsafe { q.pop() });
        }
        for p in producers {
            p.join().unwrap();
        }
        // SAFETY: as above.
        while let Some(v) = unsafe { q.pop() } {
            got.push(v);
        }
        assert!(in_order(&got), "{got:?}");
        got.sort();
        assert_eq!(got, [(0, 0), (0, 1), (1, 0), (1, 1)]);
    });
}

/// (m) One producer pushes three values, then pops one through `pop_shared` (as an
/// `OverflowPolicy::DropOldest` push does) while the consumer pops through `pop_shared` too:
/// each value is taken exactly once, each popper sees them in order, and what is left after
/// the join drains in order.
#[test]
fn m_producer_pops_as_drop_oldest_does() {
    model(|| {
        let q = Arc::new(Segments::new());
        let producer = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                q.push((0, 0));
                q.push((0, 1));
                q.push((0, 2));
                q.pop_shared()
            })
        };
        let mut consumer = Vec::new();
        for _ in 0..2 {
            consumer.extend(q.pop_shared());
        }
        let dropped = producer.join().unwrap();
        // SAFETY: the producer has joined: the main thread is the only popper.
        while let Some(v) = unsafe { q.pop() } {
            consumer.push(v);
        }
        assert!(in_order(&consumer), "{consumer:?}");
        let mut all = consumer.clone();
        all.extend(dropped);
        all.sort();
        assert_eq!(
            all,
            [(0, 0), (0, 1), (0, 2)],
            "consumer {consumer:?}, dropped {dropped:?}"
        );
    });
}

/// (m) Values left queued are dropped with the queue: two producers push loom `Arc`s (three in
/// all, across a boundary) while the consumer pops one if it can; then the queue is dropped
/// with the rest inside. loom's leak check fails the model if any `Arc` is not dropped, and
/// double drops would panic.
#[test]
fn m_drop_with_values_left() {
    model(|| {
        let q = Arc::new(Segments::new());
        let a = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                q.push(Arc::new(1u8));
                q.push(Arc::new(2u8));
            })
        };
        let b = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.push(Arc::new(3u8)))
        };
        // SAFETY: the main thread is the only popper.
        let first = unsafe { q.pop() };
        a.join().unwrap();
        b.join().unwrap();
        drop(first);
        drop(q);
    });
}
