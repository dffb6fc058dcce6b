//! Shared by the criterion benches: driving the hub without a runtime, building rooms once,
//! draining queues outside the timed part, and baseline (a) — the obvious design.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::RwLock;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use nucleus_stream::{QueueConfig, Receiver, SocketMessage, StreamHub, WebSocket, channel};
use tokio::sync::mpsc;

/// Completes a hub call: every hub method finishes on its first poll, so no runtime is needed
/// on the hot path.
///
/// # Panics
///
/// If the future is pending (a hub method that awaited: a bug the bench must not hide).
pub fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a hub method awaited"),
    }
}

/// The message every bench sends: 64 bytes of text in a shared buffer, as a chat message is.
pub fn message() -> SocketMessage {
    SocketMessage::text("x".repeat(64))
}

/// Per-socket queue bound, the same for the hub and the baselines.
pub const QUEUE: usize = 4096;

/// How many broadcasts to time back to back before draining, so that no queue holds more
/// than ~32k messages in total (memory) nor overflows its bound, and so that one
/// `Instant::now` pair is amortized over many sends when rooms are small.
pub fn batch(members: usize) -> u64 {
    (32_768 / members.max(1)).clamp(1, 1024) as u64
}

/// `iters` sends, timed in batches of `batch`; `drain` runs untimed after each batch.
pub fn timed_batches(
    iters: u64,
    batch: u64,
    mut send: impl FnMut(),
    mut drain: impl FnMut(),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(batch);
        let start = Instant::now();
        for _ in 0..n {
            send();
        }
        total += start.elapsed();
        drain();
        left -= n;
    }
    total
}

/// A hub with `n` registered sockets named `{prefix}{i}`, all in `room`.
pub fn hub_room(n: usize, prefix: &str, room: &str) -> (StreamHub, Vec<Receiver>) {
    let hub = StreamHub::new();
    let rxs = hub_join(&hub, n, prefix, room);
    (hub, rxs)
}

/// Registers `n` sockets `{prefix}{i}` in `hub` and joins them to `room`.
pub fn hub_join(hub: &StreamHub, n: usize, prefix: &str, room: &str) -> Vec<Receiver> {
    let config = QueueConfig::default().max_messages(QUEUE);
    (0..n)
        .map(|i| {
            let (tx, rx) = channel(config);
            let id = format!("{prefix}{i}");
            now(hub.register(WebSocket::new(id.as_str(), tx))).expect("register");
            now(hub.join_room(&id, room)).expect("join");
            rx
        })
        .collect()
}

/// Empties every hub queue.
pub fn drain_hub(rxs: &mut [Receiver]) {
    for rx in rxs {
        while rx.try_recv().is_ok() {}
    }
}

/// Baseline (a), the obvious design: `RwLock<HashMap<room, HashMap<id, tokio mpsc sender>>>`
/// (plus the socket registry a join looks the sender up in). Bounded tokio channels of the
/// same capacity as the hub's queues, `try_send` so a broadcast never waits either.
#[derive(Default)]
pub struct Naive {
    sockets: RwLock<HashMap<String, mpsc::Sender<SocketMessage>>>,
    rooms: RwLock<HashMap<String, HashMap<String, mpsc::Sender<SocketMessage>>>>,
}

impl Naive {
    pub fn register(&self, id: &str) -> mpsc::Receiver<SocketMessage> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.sockets.write().unwrap().insert(id.to_string(), tx);
        rx
    }

    pub fn join(&self, id: &str, room: &str) -> bool {
        let Some(tx) = self.sockets.read().unwrap().get(id).cloned() else {
            return false;
        };
        self.rooms
            .write()
            .unwrap()
            .entry(room.to_string())
            .or_default()
            .insert(id.to_string(), tx)
            .is_none()
    }

    pub fn leave(&self, id: &str, room: &str) -> bool {
        let mut rooms = self.rooms.write().unwrap();
        let Some(members) = rooms.get_mut(room) else {
            return false;
        };
        let left = members.remove(id).is_some();
        if members.is_empty() {
            rooms.remove(room);
        }
        left
    }

    /// Returns how many queued it.
    pub fn broadcast(&self, room: &str, msg: &SocketMessage) -> usize {
        let rooms = self.rooms.read().unwrap();
        let Some(members) = rooms.get(room) else {
            return 0;
        };
        members
            .values()
            .filter(|tx| tx.try_send(msg.clone()).is_ok())
            .count()
    }
}

/// Baseline (a) with `n` registered sockets `{prefix}{i}` in `room`.
pub fn naive_room(
    n: usize,
    prefix: &str,
    room: &str,
) -> (Naive, Vec<mpsc::Receiver<SocketMessage>>) {
    let naive = Naive::default();
    let rxs = naive_join(&naive, n, prefix, room);
    (naive, rxs)
}

/// Registers `n` sockets `{prefix}{i}` in `naive` and joins them to `room`.
pub fn naive_join(
    naive: &Naive,
    n: usize,
    prefix: &str,
    room: &str,
) -> Vec<mpsc::Receiver<SocketMessage>> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}{i}");
            let rx = naive.register(&id);
            naive.join(&id, room);
            rx
        })
        .collect()
}

/// Empties every baseline queue.
pub fn drain_naive(rxs: &mut [mpsc::Receiver<SocketMessage>]) {
    for rx in rxs {
        while rx.try_recv().is_ok() {}
    }
}

/// Criterion's output folder (`target/criterion`), found from the bench binary's path
/// (`target/release/deps/<bench>`) unless `CRITERION_HOME` says otherwise.
pub fn criterion_dir() -> Option<std::path::PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The time per iteration (ns) criterion measured in this run for `group/function` — the
/// estimate it prints (the slope of the linear fit, else the mean) — if it was measured
/// (absent in `--test` / `--list` mode or when filtered out).
pub fn mean_ns(group: &str, function: &str) -> Option<f64> {
    let path = criterion_dir()?
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(&path).ok()?;
    // Only trust a file written by this run.
    let written = std::fs::metadata(&path).ok()?.modified().ok()?;
    if written < *RUN_START.get_or_init(std::time::SystemTime::now) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| v["mean"]["point_estimate"].as_f64())
}

/// When this bench process started measuring (set by `mark_run_start`).
pub static RUN_START: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();

/// Records the start of this run, so tables only use estimates measured now.
pub fn mark_run_start() {
    RUN_START.get_or_init(std::time::SystemTime::now);
}

/// Whether criterion is really measuring (not `--test`, `--list` or `--profile-time`).
pub fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--test" || a == "--list" || a == "--profile-time")
}

/// `a / b`, formatted, or `-` when either is missing.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".to_string(),
    }
}

/// A nanosecond figure with sensible precision, or `-`.
pub fn ns(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.4}"),
        None => "-".to_string(),
    }
}

/// The benchmark filter given on the command line (criterion's positional argument), if any.
/// Setup of a large room is skipped when no benchmark that needs it would run.
pub fn filter() -> Option<String> {
    const TAKES_VALUE: [&str; 14] = [
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--plotting-backend",
        "--output-format",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let mut found = None;
    while i < args.len() {
        let a = &args[i];
        if TAKES_VALUE.contains(&a.as_str()) || a == "--color" || a == "-c" {
            i += 2;
            continue;
        }
        if !a.starts_with('-') {
            found = Some(a.clone());
        }
        i += 1;
    }
    found
}

/// Whether a benchmark whose id starts with one of `prefixes` can match the filter (a
/// substring test: exact for plain filters, conservative for regexes).
pub fn wanted(prefixes: &[&str]) -> bool {
    match filter() {
        None => true,
        Some(f) => {
            let plain = f.trim_start_matches('^').trim_end_matches('$');
            if plain.chars().any(|c| "()[]{}|*+?\\.".contains(c)) {
                return true;
            }
            prefixes
                .iter()
                .any(|p| p.contains(plain) || plain.starts_with(p))
        }
    }
}
