//! The cost of history: one broadcast to a room of 1 … 10,000 members with history off and
//! on, in the same criterion groups (`history_<n>/off`, `history_<n>/on`), and the time to
//! recover 1,000 missed messages (`recovery_1000`).
//!
//! With history on, `broadcast_to_room` also takes an offset (`fetch_add`), stores the
//! message in the room's ring (one allocation and an arc-swap store), and goes through the
//! single-deliverer handshake (two read-modify-writes on `pending`). The ring keeps 1,000
//! messages (the chat example's default).
//!
//! After the criterion groups the bench runs its own **interleaved** comparison (off, on,
//! off, on, … 11 rounds per size, each round timing a batch of broadcasts) and prints the
//! medians and their ratio — criterion's separate groups drift apart on a shared machine.
//!
//! `cargo bench --bench history` (~1.5 minutes on 2 cores);
//! `cargo bench --bench history -- history_1000` for one group.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nucleus_stream::{
    HistoryConfig, HubConfig, QueueConfig, Receiver, StreamHub, StreamPosition, WebSocket, channel,
};
use support::{batch, drain_hub, hub_join, message, now, timed_batches};

const SIZES: [usize; 4] = [1, 100, 1_000, 10_000];
const ROOM: &str = "bench-room";
const KEPT: usize = 1_000;

fn hubs(members: usize) -> [(StreamHub, Vec<Receiver>); 2] {
    let off = StreamHub::new();
    let on = StreamHub::with_config(
        HubConfig::default().history(HistoryConfig::default().prefix("").max_messages(KEPT)),
    );
    let off_rxs = hub_join(&off, members, "s", ROOM);
    let on_rxs = hub_join(&on, members, "s", ROOM);
    [(off, off_rxs), (on, on_rxs)]
}

fn bench_size(c: &mut Criterion, members: usize) {
    let name = format!("history_{members}");
    if !support::wanted(&[&format!("{name}/")]) {
        return;
    }
    let mut hubs = hubs(members);
    let msg = message();
    let b = batch(members);
    let mut group = c.benchmark_group(&name);
    group
        .throughput(Throughput::Elements(members as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (label, (hub, rxs)) in ["off", "on"].into_iter().zip(hubs.iter_mut()) {
        group.bench_function(label, |bencher| {
            bencher.iter_custom(|iters| {
                timed_batches(
                    iters,
                    b,
                    || {
                        black_box(now(hub.broadcast_to_room(ROOM, msg.clone())).ok());
                    },
                    || drain_hub(rxs),
                )
            })
        });
    }
    group.finish();
}

/// Median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per recipient of one timed batch of broadcasts.
fn round(hub: &StreamHub, rxs: &mut [Receiver], members: usize) -> f64 {
    let msg = message();
    let n = batch(members).max(64);
    let start = Instant::now();
    for _ in 0..n {
        black_box(now(hub.broadcast_to_room(ROOM, msg.clone())).ok());
    }
    let t = start.elapsed();
    drain_hub(rxs);
    t.as_nanos() as f64 / (n as usize * members) as f64
}

fn interleaved() {
    println!("\n## history: broadcast ns per recipient, off vs on (interleaved, median of 11)\n");
    println!("| members | off | on | on / off |");
    println!("|---:|---:|---:|---:|");
    for members in SIZES {
        let mut hubs = hubs(members);
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for r in 0..12 {
            let a = round(&hubs[0].0, &mut hubs[0].1, members);
            let b = round(&hubs[1].0, &mut hubs[1].1, members);
            if r > 0 {
                // round 0 warms both up
                off.push(a);
                on.push(b);
            }
        }
        let (off, on) = (median(&mut off), median(&mut on));
        println!("| {members} | {off:.2} | {on:.2} | {:.3}× |", on / off);
    }
}

/// Time to join with a position 1,000 messages back (the replay into the joiner's queue
/// included), against a baseline of sending the same 1,000 messages to one socket with
/// `send_to` (the floor: the same queue pushes without history).
fn recovery(c: &mut Criterion) {
    if !support::wanted(&["recovery_1000/"]) {
        return;
    }
    let hub = StreamHub::with_config(
        HubConfig::default().history(HistoryConfig::default().prefix("").max_messages(KEPT)),
    );
    let _members = hub_join(&hub, 10, "m", ROOM);
    let msg = message();
    for _ in 0..KEPT {
        now(hub.broadcast_to_room(ROOM, msg.clone())).expect("room");
    }
    let top = hub.room_position(ROOM).expect("history room");
    let since = StreamPosition::new(top.epoch, top.offset - 1_000);
    let config = QueueConfig::default().max_messages(4_096);
    let mut n = 0u64;
    let mut group = c.benchmark_group("recovery_1000");
    group
        .throughput(Throughput::Elements(1_000))
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("join_room_since", |bencher| {
        bencher.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let id = format!("j{n}");
                let (tx, mut rx) = channel(config);
                now(hub.register(WebSocket::new(id.as_str(), tx))).expect("register");
                let start = Instant::now();
                let r = now(hub.join_room_since(&id, ROOM, Some(since))).expect("join");
                total += start.elapsed();
                assert!(r.recovered && r.replayed == 1_000);
                while rx.try_recv().is_ok() {}
                now(hub.unregister(&id));
            }
            total
        })
    });
    group.bench_function("send_to_1000", |bencher| {
        bencher.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let id = format!("j{n}");
                let (tx, mut rx) = channel(config);
                now(hub.register(WebSocket::new(id.as_str(), tx))).expect("register");
                let start = Instant::now();
                for _ in 0..1_000 {
                    now(hub.send_to(&id, msg.clone())).expect("send");
                }
                total += start.elapsed();
                while rx.try_recv().is_ok() {}
                now(hub.unregister(&id));
            }
            total
        })
    });
    group.finish();
}

fn main() {
    support::mark_run_start();
    let mut c = Criterion::default().configure_from_args();
    for n in SIZES {
        bench_size(&mut c, n);
    }
    recovery(&mut c);
    c.final_summary();
    if support::measuring() {
        interleaved();
    }
}
