//! The queue wakes its consumer only on the empty → non-empty transition: no wake-up may be
//! lost however producers and the consumer interleave.

use std::time::Duration;

use nucleus_stream::{QueueConfig, SocketMessage, channel};

#[test]
fn a_parked_consumer_receives_every_message_from_racing_producers() {
    const PRODUCERS: usize = 4;
    const PER_PRODUCER: usize = 50_000;
    // Room for everything, in messages and in bytes ("p i" is at most 7 bytes): the default
    // 1 MiB byte bound is less than 200,000 of them, and a consumer that falls behind (this
    // binary's other tests run in parallel) would otherwise see the queue closed as a slow
    // consumer (seen once in CI).
    let (tx, mut rx) = channel(
        QueueConfig::default()
            .max_messages(PRODUCERS * PER_PRODUCER)
            .max_bytes(PRODUCERS * PER_PRODUCER * 8),
    );
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    tx.try_send(SocketMessage::text(format!("{p} {i}")))
                        .expect("queue has room for everything");
                    // Bursts and pauses, so the queue keeps going empty and the consumer
                    // keeps parking.
                    if i % 7 == p {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .expect("runtime");
    let received = runtime.block_on(async {
        let mut next = [0usize; PRODUCERS];
        let mut n = 0;
        // A lost wake-up would hang here; the timeout turns it into a failure.
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            let text = msg.as_text().expect("text").to_string();
            let (p, i) = text.split_once(' ').expect("p i");
            let (p, i): (usize, usize) = (p.parse().expect("p"), i.parse().expect("i"));
            assert_eq!(i, next[p], "per-producer order");
            next[p] += 1;
            n += 1;
        }
        n
    });
    for p in producers {
        p.join().expect("producer");
    }
    assert_eq!(received, PRODUCERS * PER_PRODUCER);
}

/// A waker whose `clone` panics, and a counting waker, built from raw vtables.
mod wakers {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{RawWaker, RawWakerVTable, Waker};

    fn panic_clone(_: *const ()) -> RawWaker {
        panic!("waker clone panics");
    }
    fn noop(_: *const ()) {}
    static PANICKING: RawWakerVTable = RawWakerVTable::new(panic_clone, noop, noop, noop);

    /// A waker that panics when the queue clones it to store it.
    pub fn panicking() -> Waker {
        // SAFETY: the vtable's functions ignore the data pointer and uphold RawWaker's
        // contract (clone never returns: it panics).
        unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &PANICKING)) }
    }

    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker counting its wakes, and the count.
    pub fn counting() -> (Waker, impl Fn() -> usize) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let reader = Arc::clone(&count);
        (Waker::from(count), move || reader.0.load(Ordering::SeqCst))
    }
}

#[test]
fn a_waker_whose_clone_panics_does_not_stop_later_wake_ups() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::task::{Context, Poll};

    let (tx, mut rx) = channel(QueueConfig::default());
    let bad = wakers::panicking();
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        let _ = rx.poll_recv(&mut Context::from_waker(&bad));
    }));
    assert!(panicked.is_err(), "the clone's panic reaches the poller");

    // The queue must still register and wake a well-behaved waker afterwards.
    let (good, wakes) = wakers::counting();
    assert_eq!(rx.poll_recv(&mut Context::from_waker(&good)), Poll::Pending);
    tx.try_send(SocketMessage::text("after")).unwrap();
    assert_eq!(
        wakes(),
        1,
        "the consumer registered after the panic is woken"
    );
    assert_eq!(
        rx.poll_recv(&mut Context::from_waker(&good)),
        Poll::Ready(Some(SocketMessage::text("after")))
    );
}
