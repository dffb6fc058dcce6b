//! Membership churn, the hub against baseline (a) (`RwLock<HashMap<room, HashMap<id, tokio
//! mpsc sender>>>`) in the same criterion groups:
//!
//! - `join_leave_<n>`: one member leaves a room of `n` and joins it again (membership is the
//!   same after each iteration; members are taken round-robin, so a leave usually moves the
//!   last member into the hole, as it would in production). Time per leave+join pair.
//! - `fill_100000`: filling an empty room with 100,000 registered sockets, one join each.
//!   Throughput is joins; the room is emptied outside the timed part.
//! - `churn_broadcast_10000`: broadcasts to a room of 10,000 while another thread joins and
//!   leaves the same room as fast as it can (`*_churn`), against the same without it
//!   (`*_quiet`). Throughput is recipients; queues are drained outside the timed part. The
//!   churn thread's own rate is printed, so a "churn" that did not happen cannot pass.
//!
//! After the groups, the bench prints markdown tables with ratios from this run.
//! `cargo bench --bench churn` (~2 minutes on 2 cores).

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use nucleus_stream::{QueueConfig, StreamHub, WebSocket, channel};
use support::{
    Naive, batch, drain_hub, drain_naive, hub_join, hub_room, mean_ns, message, naive_join,
    naive_room, now, ns, ratio, timed_batches,
};

const JOIN_LEAVE_SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const FILL: usize = 100_000;
const CHURN_ROOM_SIZE: usize = 10_000;
const ROOM: &str = "bench-room";

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, samples: usize, secs: u64) {
    group
        .sample_size(samples)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(secs));
}

/// Round-robin member index, stepping by a prime so consecutive picks land in different
/// chunks.
fn next_member(k: &mut usize, n: usize) -> usize {
    *k = (*k + 7_919) % n;
    *k
}

fn join_leave(c: &mut Criterion, n: usize) {
    let name = format!("join_leave_{n}");
    if !support::wanted(&[&format!("{name}/")]) {
        return;
    }
    let (hub, hub_rxs) = hub_room(n, "s", ROOM);
    let ids: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let (naive, naive_rxs) = naive_room(n, "s", ROOM);
    let mut group = c.benchmark_group(&name);
    configure(&mut group, 30, 2);
    let mut k = 0;
    group.bench_function("hub", |b| {
        b.iter(|| {
            let id = &ids[next_member(&mut k, n)];
            black_box(now(hub.leave_room(id, ROOM)).expect("leave"));
            black_box(now(hub.join_room(id, ROOM)).expect("join"));
        })
    });
    group.bench_function("rwlock_mpsc", |b| {
        b.iter(|| {
            let id = &ids[next_member(&mut k, n)];
            black_box(naive.leave(id, ROOM));
            black_box(naive.join(id, ROOM));
        })
    });
    group.finish();
    drop((hub_rxs, naive_rxs));
}

fn fill(c: &mut Criterion) {
    let name = format!("fill_{FILL}");
    if !support::wanted(&[&format!("{name}/")]) {
        return;
    }
    let hub = StreamHub::new();
    let mut hub_rxs = Vec::with_capacity(FILL);
    let naive = Naive::default();
    let mut naive_rxs = Vec::with_capacity(FILL);
    let ids: Vec<String> = (0..FILL).map(|i| format!("f{i}")).collect();
    for id in &ids {
        let (tx, rx) = channel(QueueConfig::default());
        now(hub.register(WebSocket::new(id.as_str(), tx))).expect("register");
        hub_rxs.push(rx);
        naive_rxs.push(naive.register(id));
    }
    let mut group = c.benchmark_group(&name);
    group.throughput(Throughput::Elements(FILL as u64));
    configure(&mut group, 10, 3);
    group.bench_function("hub", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for id in &ids {
                    now(hub.join_room(id, ROOM)).expect("join");
                }
                total += start.elapsed();
                for id in &ids {
                    now(hub.leave_room(id, ROOM)).expect("leave");
                }
            }
            total
        })
    });
    group.bench_function("rwlock_mpsc", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for id in &ids {
                    naive.join(id, ROOM);
                }
                total += start.elapsed();
                for id in &ids {
                    naive.leave(id, ROOM);
                }
            }
            total
        })
    });
    group.finish();
}

/// A thread that makes `sockets` sockets join and leave `ROOM` until stopped, counting
/// completed join+leave pairs.
struct Churner {
    stop: Arc<AtomicBool>,
    pairs: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Churner {
    fn start(step: impl FnMut(usize) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let pairs = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, pairs) = (Arc::clone(&stop), Arc::clone(&pairs));
            let mut step = step;
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    step(i);
                    i += 1;
                    pairs.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        Self {
            stop,
            pairs,
            thread: Some(thread),
            started: Instant::now(),
        }
    }

    /// Stops the thread; returns join+leave pairs per second it achieved.
    fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("churn thread");
        }
        self.pairs.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64()
    }
}

const CHURNERS: usize = 64;

fn churn_broadcast(c: &mut Criterion) -> Vec<(String, f64)> {
    let n = CHURN_ROOM_SIZE;
    let name = format!("churn_broadcast_{n}");
    let mut rates = Vec::new();
    if !support::wanted(&[&format!("{name}/")]) {
        return rates;
    }
    let (hub, mut hub_rxs) = hub_room(n, "s", ROOM);
    let (naive, mut naive_rxs) = naive_room(n, "s", ROOM);
    let naive = Arc::new(naive);
    let msg = message();
    let b = batch(n);
    let mut group = c.benchmark_group(&name);
    group.throughput(Throughput::Elements(n as u64));
    configure(&mut group, 20, 3);

    let mut bench_hub = |group: &mut BenchmarkGroup<'_, WallTime>, id: &str| {
        group.bench_function(id, |bencher| {
            bencher.iter_custom(|iters| {
                timed_batches(
                    iters,
                    b,
                    || {
                        black_box(now(hub.broadcast_to_room(ROOM, msg.clone())).ok());
                    },
                    || drain_hub(&mut hub_rxs),
                )
            })
        });
    };
    bench_hub(&mut group, "hub_quiet");
    {
        let hub2 = hub.clone();
        let mut rxs = hub_join(&hub2, CHURNERS, "c", "churn-warmup");
        for i in 0..CHURNERS {
            now(hub2.leave_room(&format!("c{i}"), "churn-warmup")).expect("leave");
        }
        drain_hub(&mut rxs);
        let ids: Vec<String> = (0..CHURNERS).map(|i| format!("c{i}")).collect();
        let churner = Churner::start(move |i| {
            let k = i % CHURNERS;
            now(hub2.join_room(&ids[k], ROOM)).expect("join");
            now(hub2.leave_room(&ids[k], ROOM)).expect("leave");
            while rxs[k].try_recv().is_ok() {}
        });
        bench_hub(&mut group, "hub_churn");
        rates.push(("hub".to_string(), churner.finish()));
    }

    let mut bench_naive = |group: &mut BenchmarkGroup<'_, WallTime>, id: &str| {
        let naive = Arc::clone(&naive);
        group.bench_function(id, |bencher| {
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
    };
    bench_naive(&mut group, "rwlock_mpsc_quiet");
    {
        let naive2 = Arc::clone(&naive);
        let mut rxs = naive_join(&naive2, CHURNERS, "c", "churn-warmup");
        for i in 0..CHURNERS {
            naive2.leave(&format!("c{i}"), "churn-warmup");
        }
        drain_naive(&mut rxs);
        let ids: Vec<String> = (0..CHURNERS).map(|i| format!("c{i}")).collect();
        let churner = Churner::start(move |i| {
            let k = i % CHURNERS;
            naive2.join(&ids[k], ROOM);
            naive2.leave(&ids[k], ROOM);
            while rxs[k].try_recv().is_ok() {}
        });
        bench_naive(&mut group, "rwlock_mpsc_churn");
        rates.push(("rwlock_mpsc".to_string(), churner.finish()));
    }
    group.finish();
    rates
}

fn tables(rates: &[(String, f64)]) {
    println!("\n## churn (this run)\n");
    println!("| operation | hub | rwlock_mpsc (a) | (a) / hub |");
    println!("|---|---:|---:|---:|");
    for n in JOIN_LEAVE_SIZES {
        let g = format!("join_leave_{n}");
        let (h, a) = (mean_ns(&g, "hub"), mean_ns(&g, "rwlock_mpsc"));
        if h.is_some() || a.is_some() {
            println!(
                "| leave+join in a room of {n} (ns) | {} | {} | {} |",
                ns(h),
                ns(a),
                ratio(a, h)
            );
        }
    }
    let g = format!("fill_{FILL}");
    let per = |f: &str| mean_ns(&g, f).map(|t| t / FILL as f64);
    let (h, a) = (per("hub"), per("rwlock_mpsc"));
    if h.is_some() || a.is_some() {
        println!(
            "| fill 0 → {FILL}: ns per join | {} | {} | {} |",
            ns(h),
            ns(a),
            ratio(a, h)
        );
        println!(
            "| fill 0 → {FILL}: total (ms) | {} | {} | |",
            ns(mean_ns(&g, "hub").map(|t| t / 1e6)),
            ns(mean_ns(&g, "rwlock_mpsc").map(|t| t / 1e6)),
        );
    }
    let g = format!("churn_broadcast_{CHURN_ROOM_SIZE}");
    let per = |f: &str| mean_ns(&g, f).map(|t| t / CHURN_ROOM_SIZE as f64);
    let (hq, hc, aq, ac) = (
        per("hub_quiet"),
        per("hub_churn"),
        per("rwlock_mpsc_quiet"),
        per("rwlock_mpsc_churn"),
    );
    if [hq, hc, aq, ac].iter().any(Option::is_some) {
        println!(
            "\n| broadcast to {CHURN_ROOM_SIZE} | quiet (ns/recipient) | under churn (ns/recipient) | throughput under churn / quiet | churn thread (join+leave pairs/s) |"
        );
        println!("|---|---:|---:|---:|---:|");
        let rate = |who: &str| {
            rates
                .iter()
                .find(|(w, _)| w == who)
                .map_or("-".to_string(), |(_, r)| format!("{r:.0}"))
        };
        println!(
            "| hub | {} | {} | {} | {} |",
            ns(hq),
            ns(hc),
            ratio(hq, hc),
            rate("hub")
        );
        println!(
            "| rwlock_mpsc (a) | {} | {} | {} | {} |",
            ns(aq),
            ns(ac),
            ratio(aq, ac),
            rate("rwlock_mpsc")
        );
    }
}

fn main() {
    support::mark_run_start();
    let mut c = Criterion::default().configure_from_args();
    for n in JOIN_LEAVE_SIZES {
        join_leave(&mut c, n);
    }
    fill(&mut c);
    let rates = churn_broadcast(&mut c);
    c.final_summary();
    if support::measuring() {
        tables(&rates);
    }
}
