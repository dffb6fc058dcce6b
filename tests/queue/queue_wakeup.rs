//! The queue wakes its consumer only on the empty → non-empty transition: no wake-up may be
//! lost however producers and the consumer interleave.

use std::time::Duration;

use nucleus_stream::{QueueConfig, SocketMessage, channel};

#[test]
fn a_parked_consumer_receives_every_message_from_racing_producers() {
    const PRODUCERS: usize = 4;
    const PER_PRODUCER: usize = 50_000;
    let (tx, mut rx) = channel(QueueConfig::default().max_messages(PRODUCERS * PER_PRODUCER));
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
