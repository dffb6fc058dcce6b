//! Fan-out: one broadcast to a room of 1 … 100,000 members, the hub against two baselines
//! measured in the same criterion groups:
//!
//! - `rwlock_mpsc` — baseline (a), the obvious design:
//!   `RwLock<HashMap<room, HashMap<id, tokio mpsc sender>>>`;
//! - `tokio_broadcast` — `tokio::sync::broadcast`, the reference for raw fan-out. Its send
//!   writes one slot whatever the number of receivers; each receiver pays when it reads.
//!
//! Two groups per room size:
//! - `fanout_<n>`: the broadcast alone is timed; queues are drained outside the timed part
//!   (after each batch of broadcasts).
//! - `delivered_<n>`: broadcast *and* every recipient taking the message out of its queue
//!   are timed — the fair comparison with `tokio_broadcast`, whose per-recipient work happens
//!   on the receiving side.
//!
//! Throughput is `Elements(members)`, so criterion's elem/s is recipients per second. After
//! the groups, the bench prints a markdown table of ns per recipient and ratios against the
//! baselines, all from this run.
//!
//! `cargo bench --bench fanout` (all sizes, ~2 minutes on 2 cores);
//! `cargo bench --bench fanout -- fanout_10000` for one group.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use support::{
    QUEUE, batch, drain_hub, drain_naive, hub_room, mean_ns, message, naive_room, now, ns, ratio,
    timed_batches,
};
use tokio::sync::broadcast;

const SIZES: [usize; 5] = [1, 100, 1_000, 10_000, 100_000];
const ROOM: &str = "bench-room";

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, members: usize) {
    group
        .throughput(Throughput::Elements(members as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(if members >= 100_000 { 3 } else { 2 }));
}

fn bench_size(c: &mut Criterion, members: usize) {
    let (f, d) = (
        format!("fanout_{members}/"),
        format!("delivered_{members}/"),
    );
    if !support::wanted(&[&f, &d]) {
        return;
    }
    // Built once per size, shared by both groups.
    let (hub, mut hub_rxs) = hub_room(members, "s", ROOM);
    let (naive, mut naive_rxs) = naive_room(members, "s", ROOM);
    let (btx, mut brxs) = {
        let (tx, rx) = broadcast::channel(QUEUE);
        let rxs: Vec<_> = (0..members).map(|_| tx.subscribe()).collect();
        drop(rx);
        (tx, rxs)
    };
    let drain_broadcast = |rxs: &mut [broadcast::Receiver<_>]| {
        for rx in rxs {
            while rx.try_recv().is_ok() {}
        }
    };
    let msg = message();
    let b = batch(members);

    let mut group = c.benchmark_group(format!("fanout_{members}"));
    configure(&mut group, members);
    group.bench_function("hub", |bencher| {
        bencher.iter_custom(|iters| {
            timed_batches(
                iters,
                b,
                || {
                    let report = now(hub.broadcast_to_room(ROOM, msg.clone())).expect("room");
                    debug_assert_eq!(report.queued, members);
                    black_box(report);
                },
                || drain_hub(&mut hub_rxs),
            )
        })
    });
    group.bench_function("rwlock_mpsc", |bencher| {
        bencher.iter_custom(|iters| {
            timed_batches(
                iters,
                b,
                || {
                    black_box(naive.broadcast(ROOM, &msg));
                },
                || drain_naive(&mut naive_rxs),
            )
        })
    });
    group.bench_function("tokio_broadcast", |bencher| {
        bencher.iter_custom(|iters| {
            timed_batches(
                iters,
                b,
                || {
                    black_box(btx.send(msg.clone()).ok());
                },
                || drain_broadcast(&mut brxs),
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group(format!("delivered_{members}"));
    configure(&mut group, members);
    let delivered = |iters: u64, send: &mut dyn FnMut(), drain: &mut dyn FnMut()| {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(b);
            let start = Instant::now();
            for _ in 0..n {
                send();
            }
            drain();
            total += start.elapsed();
            left -= n;
        }
        total
    };
    group.bench_function("hub", |bencher| {
        bencher.iter_custom(|iters| {
            delivered(
                iters,
                &mut || {
                    black_box(now(hub.broadcast_to_room(ROOM, msg.clone())).ok());
                },
                &mut || drain_hub(&mut hub_rxs),
            )
        })
    });
    group.bench_function("rwlock_mpsc", |bencher| {
        bencher.iter_custom(|iters| {
            delivered(
                iters,
                &mut || {
                    black_box(naive.broadcast(ROOM, &msg));
                },
                &mut || drain_naive(&mut naive_rxs),
            )
        })
    });
    group.bench_function("tokio_broadcast", |bencher| {
        bencher.iter_custom(|iters| {
            delivered(
                iters,
                &mut || {
                    black_box(btx.send(msg.clone()).ok());
                },
                &mut || drain_broadcast(&mut brxs),
            )
        })
    });
    group.finish();
}

fn table() {
    let per = |group: &str, f: &str, n: usize| mean_ns(group, f).map(|t| t / n as f64);
    println!("\n## fanout: ns per recipient (this run)\n");
    println!(
        "| members | hub | rwlock_mpsc (a) | (a) / hub | tokio_broadcast send | \
         delivered: hub | delivered: (a) | (a) / hub | delivered: tokio_broadcast | tokio / hub |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in SIZES {
        let (f, d) = (format!("fanout_{n}"), format!("delivered_{n}"));
        let (h, a, t) = (
            per(&f, "hub", n),
            per(&f, "rwlock_mpsc", n),
            per(&f, "tokio_broadcast", n),
        );
        let (dh, da, dt) = (
            per(&d, "hub", n),
            per(&d, "rwlock_mpsc", n),
            per(&d, "tokio_broadcast", n),
        );
        if [h, a, t, dh, da, dt].iter().all(Option::is_none) {
            continue;
        }
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ns(h),
            ns(a),
            ratio(a, h),
            ns(t),
            ns(dh),
            ns(da),
            ratio(da, dh),
            ns(dt),
            ratio(dt, dh),
        );
    }
}

fn main() {
    support::mark_run_start();
    let mut c = Criterion::default().configure_from_args();
    for n in SIZES {
        bench_size(&mut c, n);
    }
    c.final_summary();
    if support::measuring() {
        table();
    }
}
