//! Cross-node fan-out through a real redis-server against the same room on one node.
//!
//! ```text
//! cargo bench --features redis --bench cluster            # full run (~1 min)
//! cargo bench --features redis --bench cluster -- --test  # one short round (CI)
//! cargo bench --features redis --bench cluster -- history # only the history tables
//! ```
//!
//! A room of 1,000 members, 64-byte messages at a fixed 1,000 broadcasts/s from one node:
//! (1) all members on that node; (2) 500 on it and 500 on a second node (both hubs in this
//! process, joined through a redis-server this program starts on a free loopback port).
//! Rounds alternate (1), (2), (1), (2)... and medians are reported. Each member is a task
//! that drains its queue and records the latency from the broadcast call to its receipt.
//! Then (3): four nodes, members on two of them, to count the nodes each broadcast reaches.
//! Then (4), history (issue 13): the same two nodes with a room whose log lives in Redis (one
//! script per publish) against a plain room, rounds interleaved — latency of the publisher's
//! own members (who now get the message back from Redis) and of the other node's, Redis CPU
//! and wall time per publish in a burst — and (5) the time to recover 1,000 missed messages
//! on a node that has no member in the room (from Redis) against one that has (its ring).

#[allow(dead_code)]
#[path = "../tests/cluster/redis_server.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use nucleus_stream::cluster::{ClusterConfig, RedisCluster};
use nucleus_stream::{
    HistoryConfig, HubConfig, QueueConfig, SocketMessage, StreamHub, WebSocket, channel,
};
use redis_server::RedisServer;

const RATE: u64 = 1_000;

struct Round {
    broadcasts: u64,
    expected: u64,
    delivered: u64,
    secs: f64,
    /// Latencies (µs) of local and of remote recipients.
    local: Vec<u32>,
    remote: Vec<u32>,
    publishes: u64,
    redis_cpu_ticks: u64,
    /// Run-queue wait of this process's and of Redis's threads during the round, ns.
    wait_self: u64,
    wait_redis: u64,
}

async fn info_publish_calls(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 14th field,
    // stime the 15th of the whole line.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// Nanoseconds the threads of `pid` spent runnable but waiting for a CPU
/// (`/proc/PID/task/*/schedstat`, second field).
fn runqueue_wait_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

fn config(url: &str, node: &str) -> ClusterConfig {
    ClusterConfig::new(url).node_id(node)
}

/// Registers `n` members of "room" on `hub`, each drained by a task that records latencies.
fn members(
    hub: &StreamHub,
    n: usize,
    base: Instant,
) -> Vec<tokio::task::JoinHandle<(u64, Vec<u32>, u64)>> {
    (0..n)
        .map(|_| {
            let (tx, mut rx) = channel(QueueConfig::default().max_messages(1 << 16));
            let id = hub.next_socket_id();
            nucleus_stream_now(hub.register(WebSocket::new(id.clone(), tx))).expect("register");
            nucleus_stream_now(hub.join_room(&id, "room")).expect("join");
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut n = 0u64;
                let mut last = 0u64;
                while let Some(msg) = rx.recv().await {
                    let text = msg.as_text().unwrap_or("");
                    if text == "end" {
                        break;
                    }
                    let sent: u64 = text
                        .split(' ')
                        .next()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    let now = base.elapsed().as_nanos() as u64;
                    lat.push(((now.saturating_sub(sent)) / 1_000) as u32);
                    n += 1;
                    last = now;
                }
                (n, lat, last)
            })
        })
        .collect()
}

/// Every hub method completes on its first poll.
fn nucleus_stream_now<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a hub method awaited"),
    }
}

/// `mode`: 0 one node (no cluster), 1 two nodes with the cluster tasks on their own threads
/// (the default), 2 two nodes with the cluster tasks on the application's runtime.
async fn round(redis: &RedisServer, room: usize, mode: usize, broadcasts: u64, tag: &str) -> Round {
    let split = mode > 0;
    let own = mode == 1;
    let base = Instant::now();
    let a = StreamHub::new();
    let b = StreamHub::new();
    // The 1-node baseline is the default hub: no cluster attached.
    let clusters = split.then(|| {
        let ca = RedisCluster::start(&a, config(&redis.url(), &format!("a{tag}")).own_thread(own))
            .expect("a");
        let cb = RedisCluster::start(&b, config(&redis.url(), &format!("b{tag}")).own_thread(own))
            .expect("b");
        (ca, cb)
    });
    let local_n = if split { room / 2 } else { room };
    let la = members(&a, local_n, base);
    let lb = members(&b, room - local_n, base);
    if let Some((ca, cb)) = &clusters {
        assert!(
            ca.synced(Duration::from_secs(10)).await && cb.synced(Duration::from_secs(10)).await
        );
    }
    if split {
        // Wait until b's subscription carries a's traffic.
        while a.cluster_room_size("room").await < room {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conn = redis.client().await;
    let pub0 = info_publish_calls(&mut conn).await;
    let cpu0 = cpu_ticks(redis.pid());
    let wait0 = (
        runqueue_wait_ns(std::process::id()),
        runqueue_wait_ns(redis.pid()),
    );
    let start_ns = base.elapsed().as_nanos() as u64;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let pad = "x".repeat(44);
    for _ in 0..broadcasts {
        tick.tick().await;
        let now = base.elapsed().as_nanos() as u64;
        let text = format!("{now:020} {pad}"); // 64 bytes
        a.broadcast_to_room("room", SocketMessage::text(text))
            .await
            .expect("broadcast");
    }
    // Let the last ones cross, then stop every member.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pub1 = info_publish_calls(&mut conn).await;
    let cpu1 = cpu_ticks(redis.pid());
    let wait1 = (
        runqueue_wait_ns(std::process::id()),
        runqueue_wait_ns(redis.pid()),
    );
    a.broadcast_to_room("room", SocketMessage::text("end"))
        .await
        .expect("end");
    let mut r = Round {
        broadcasts,
        expected: broadcasts * room as u64,
        delivered: 0,
        secs: 0.0,
        local: Vec::new(),
        remote: Vec::new(),
        publishes: pub1 - pub0,
        redis_cpu_ticks: cpu1 - cpu0,
        wait_self: wait1.0 - wait0.0,
        wait_redis: wait1.1 - wait0.1,
    };
    let mut last = start_ns;
    for h in la {
        let (n, lat, l) = h.await.expect("member");
        r.delivered += n;
        r.local.extend(lat);
        last = last.max(l);
    }
    for h in lb {
        let (n, lat, l) = tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .expect("remote member ends")
            .expect("member");
        r.delivered += n;
        r.remote.extend(lat);
        last = last.max(l);
    }
    // From the first broadcast to the last delivery.
    r.secs = (last - start_ns) as f64 / 1e9;
    if let Some((ca, cb)) = clusters {
        let sa = ca.stats();
        let sb = cb.stats();
        assert_eq!(sb.gaps, 0, "gaps");
        assert_eq!(sa.publish_failed + sa.backlog_full, 0, "publish losses");
        ca.shutdown().await;
        cb.shutdown().await;
    }
    r
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    f64::from(v[i]) / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn reach(redis: &RedisServer, broadcasts: u64) -> (Vec<u64>, u64, u64) {
    let hubs: Vec<StreamHub> = (0..4).map(|_| StreamHub::new()).collect();
    let clusters: Vec<RedisCluster> = hubs
        .iter()
        .enumerate()
        .map(|(i, h)| {
            RedisCluster::start(h, config(&redis.url(), &format!("r{i}"))).expect("start")
        })
        .collect();
    let base = Instant::now();
    let _a = members(&hubs[0], 10, base);
    let _b = members(&hubs[1], 10, base);
    for c in &clusters {
        assert!(c.synced(Duration::from_secs(10)).await);
    }
    let before: Vec<u64> = clusters.iter().map(|c| c.stats().received).collect();
    let mut conn = redis.client().await;
    let pub0 = info_publish_calls(&mut conn).await;
    let data0 = clusters[0].stats().published;
    for _ in 0..broadcasts {
        hubs[0]
            .broadcast_to_room("room", SocketMessage::text("0 x"))
            .await
            .expect("b");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publishes = info_publish_calls(&mut conn).await - pub0;
    let data = clusters[0].stats().published - data0;
    let got = clusters
        .iter()
        .zip(before)
        .map(|(c, b)| c.stats().received - b)
        .collect();
    for c in clusters {
        c.shutdown().await;
    }
    (got, publishes, data)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let (rounds, broadcasts) = if quick { (1, 200) } else { (3, 5_000) };
    // `-- history`: only the history tables (4) and (5).
    let only_history = std::env::args().any(|a| a == "history");
    let redis = RedisServer::start();
    if !only_history {
        table(&redis, 1_000, &[0, 1, 2], rounds, broadcasts).await;
        println!();
        table(&redis, 10, &[0, 1], rounds, broadcasts).await;
        reach_table(&redis, quick).await;
    }
    history_table(&redis, quick).await;
    recovery_table(&redis, quick).await;
}

async fn table(redis: &RedisServer, room: usize, modes: &[usize], rounds: usize, broadcasts: u64) {
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let mut rows: [Vec<Round>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let half = room / 2;
    let all_names = [
        "1 node".to_string(),
        format!("2 nodes ({half} + {half})"),
        format!("2 nodes ({half} + {half}), cluster tasks on the app's runtime"),
    ];
    let names: Vec<String> = modes.iter().map(|&m| all_names[m].clone()).collect();
    for i in 0..rounds {
        for (k, &mode) in modes.iter().enumerate() {
            let r = round(redis, room, mode, broadcasts, &format!("{room}-{i}-{k}")).await;
            eprintln!(
                "round {i} {}: {}/{} delivered, {:.0}/s",
                names[k],
                r.delivered,
                r.expected,
                r.delivered as f64 / r.secs
            );
            rows[k].push(r);
        }
    }
    println!(
        "| run ({room} members, {RATE} broadcasts/s, {broadcasts} per round, median of {rounds}) | lost | deliveries/s | p50 ms | p99 ms | remote p50 ms | remote p99 ms | PUBLISH per broadcast | Redis CPU µs per broadcast | run-queue wait µs per broadcast (bench / Redis) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut p99 = [0.0; 3];
    let mut remote_p99 = [f64::NAN; 3];
    for (k, name) in names.iter().enumerate() {
        let rs = &mut rows[k];
        let lost: u64 = rs
            .iter()
            .map(|r| r.expected - r.delivered.min(r.expected))
            .sum();
        let dps = median(rs.iter().map(|r| r.delivered as f64 / r.secs).collect());
        let mut all_p50 = Vec::new();
        let mut all_p99 = Vec::new();
        let mut rem_p50 = Vec::new();
        let mut rem_p99 = Vec::new();
        for r in rs.iter_mut() {
            let mut all: Vec<u32> = r.local.iter().chain(&r.remote).copied().collect();
            all_p50.push(pct(&mut all, 0.5));
            all_p99.push(pct(&mut all, 0.99));
            rem_p50.push(pct(&mut r.remote, 0.5));
            rem_p99.push(pct(&mut r.remote, 0.99));
        }
        let pubs = median(
            rs.iter()
                .map(|r| r.publishes as f64 / r.broadcasts as f64)
                .collect(),
        );
        let pubs = if k == 0 {
            "– (no cluster)".to_string()
        } else {
            format!("{pubs:.4}")
        };
        let cpu = median(
            rs.iter()
                .map(|r| r.redis_cpu_ticks as f64 / ticks_per_sec * 1e6 / r.broadcasts as f64)
                .collect(),
        );
        let wait = format!(
            "{:.0} / {:.0}",
            median(
                rs.iter()
                    .map(|r| r.wait_self as f64 / 1e3 / r.broadcasts as f64)
                    .collect()
            ),
            median(
                rs.iter()
                    .map(|r| r.wait_redis as f64 / 1e3 / r.broadcasts as f64)
                    .collect()
            )
        );
        p99[k] = median(all_p99.clone());
        remote_p99[k] = median(rem_p99.clone());
        let fmt = |v: Vec<f64>| {
            let m = median(v);
            if m.is_nan() {
                "–".to_string()
            } else {
                format!("{m:.3}")
            }
        };
        println!(
            "| {name} | {lost} | {dps:.0} | {} | {} | {} | {} | {pubs} | {cpu:.1} | {wait} |",
            fmt(all_p50),
            fmt(all_p99),
            fmt(rem_p50),
            fmt(rem_p99),
        );
    }
    println!();
    println!(
        "p99 of the remote members minus the 1-node p99: {:.3} ms (target ≤ 2 ms); all members: {:.3} ms",
        remote_p99[1] - p99[0],
        p99[1] - p99[0]
    );
    if modes.len() > 2 {
        println!(
            "with the cluster tasks on the app's runtime: remote p99 minus 1-node p99: {:.3} ms",
            remote_p99[2] - p99[0]
        );
    }
}

async fn reach_table(redis: &RedisServer, quick: bool) {
    let (got, publishes, data) = reach(redis, if quick { 100 } else { 1_000 }).await;
    println!();
    let n = if quick { 100 } else { 1_000 };
    println!("| {n} broadcasts from r0; 4 nodes, members on r0 and r1 | r0 | r1 | r2 | r3 |");
    println!("|---|---|---|---|---|");
    println!(
        "| room messages each node received | {} | {} | {} | {} |",
        got[0], got[1], got[2], got[3]
    );
    println!();
    println!(
        "r0 published {data} room messages; Redis counted {publishes} PUBLISH calls in the window (the rest: presence and probes of 4 nodes)"
    );
}

fn history_hub() -> StreamHub {
    StreamHub::with_config(HubConfig::default().history(HistoryConfig::default().prefix("h:")))
}

/// One member of `room` on `hub` whose task records the latency of paced messages (`p`) and
/// counts burst messages (`b`), returning (latencies µs, burst count, last burst receipt ns).
fn history_member(
    hub: &StreamHub,
    room: &str,
    base: Instant,
) -> tokio::task::JoinHandle<(Vec<u32>, u64, u64)> {
    let (tx, mut rx) = channel(QueueConfig::default().max_messages(1 << 17));
    let id = hub.next_socket_id();
    nucleus_stream_now(hub.register(WebSocket::new(id.clone(), tx))).expect("register");
    nucleus_stream_now(hub.join_room(&id, room)).expect("join");
    tokio::spawn(async move {
        let (mut lat, mut burst, mut last) = (Vec::new(), 0u64, 0u64);
        while let Some(msg) = rx.recv().await {
            let text = msg.as_text().unwrap_or("");
            let mut parts = text.split(' ');
            let sent: u64 = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
            let now = base.elapsed().as_nanos() as u64;
            match parts.next() {
                Some("p") => lat.push((now.saturating_sub(sent) / 1_000) as u32),
                Some("b") => {
                    burst += 1;
                    last = now;
                }
                _ => break,
            }
        }
        (lat, burst, last)
    })
}

struct HistoryRound {
    local: Vec<u32>,
    remote: Vec<u32>,
    /// Wall time of the burst, first publish to the other node's last receipt (s).
    burst_secs: f64,
    redis_cpu_ticks: u64,
}

/// Two nodes, 10 members of one room on each; `history` picks a room with history.
async fn history_round(
    redis: &RedisServer,
    history: bool,
    paced: u64,
    burst: u64,
    tag: &str,
) -> HistoryRound {
    let base = Instant::now();
    let (a, b) = (history_hub(), history_hub());
    let ca = RedisCluster::start(&a, config(&redis.url(), &format!("ha{tag}"))).expect("a");
    let cb = RedisCluster::start(&b, config(&redis.url(), &format!("hb{tag}"))).expect("b");
    let room = if history {
        format!("h:room{tag}")
    } else {
        format!("room{tag}")
    };
    let la: Vec<_> = (0..10).map(|_| history_member(&a, &room, base)).collect();
    let lb: Vec<_> = (0..10).map(|_| history_member(&b, &room, base)).collect();
    assert!(ca.synced(Duration::from_secs(10)).await && cb.synced(Duration::from_secs(10)).await);
    while a.cluster_room_size(&room).await < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pad = "x".repeat(40);
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..paced {
        tick.tick().await;
        let now = base.elapsed().as_nanos() as u64;
        a.broadcast_to_room(&room, SocketMessage::text(format!("{now:020} p {pad}")))
            .await
            .expect("broadcast");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu0 = cpu_ticks(redis.pid());
    let start = base.elapsed().as_nanos() as u64;
    for _ in 0..burst {
        let now = base.elapsed().as_nanos() as u64;
        a.broadcast_to_room(&room, SocketMessage::text(format!("{now:020} b {pad}")))
            .await
            .expect("broadcast");
        if a.cluster_room_size(&room).await == 0 {
            break;
        }
    }
    // Wait until the other node has them all (bounded), then stop everyone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ca.stats().published < paced + burst && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu1 = cpu_ticks(redis.pid());
    a.broadcast_to_room(&room, SocketMessage::text("0 end"))
        .await
        .expect("end");
    let mut r = HistoryRound {
        local: Vec::new(),
        remote: Vec::new(),
        burst_secs: 0.0,
        redis_cpu_ticks: cpu1 - cpu0,
    };
    let mut last = start;
    for h in la {
        let (lat, _, _) = tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("member ends")
            .expect("member");
        r.local.extend(lat);
    }
    for h in lb {
        let (lat, n, l) = tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("member ends")
            .expect("member");
        assert_eq!(n, burst, "the other node's member missed burst messages");
        r.remote.extend(lat);
        last = last.max(l);
    }
    r.burst_secs = (last - start) as f64 / 1e9;
    let (sa, sb) = (ca.stats(), cb.stats());
    assert_eq!(sb.gaps, 0, "gaps");
    assert_eq!(
        sa.publish_failed + sa.backlog_full + sa.history_unlogged,
        0,
        "losses"
    );
    ca.shutdown().await;
    cb.shutdown().await;
    r
}

async fn history_table(redis: &RedisServer, quick: bool) {
    let (rounds, paced, burst) = if quick {
        (1, 100, 500)
    } else {
        (5, 2_000, 20_000)
    };
    let mut rows: [Vec<[f64; 6]>; 2] = [Vec::new(), Vec::new()];
    for i in 0..rounds {
        for history in [false, true] {
            let mut r = history_round(redis, history, paced, burst, &format!("{i}{history}")).await;
            rows[usize::from(history)].push([
                pct(&mut r.local, 0.5),
                pct(&mut r.local, 0.99),
                pct(&mut r.remote, 0.5),
                pct(&mut r.remote, 0.99),
                r.burst_secs * 1e6 / burst as f64,
                r.redis_cpu_ticks as f64 * 1e4 / burst as f64,
            ]);
        }
    }
    let med = |h: usize, k: usize| median(rows[h].iter().map(|r| r[k]).collect());
    println!();
    println!(
        "| 2 nodes, 10 + 10 members, {paced} paced at {RATE}/s then a burst of {burst} (median of {rounds} interleaved rounds) | plain room | room with history (script) | difference | ratio |"
    );
    println!("|---|---:|---:|---:|---:|");
    let names = [
        "publisher's node p50 latency (ms)",
        "publisher's node p99 latency (ms)",
        "other node p50 latency (ms)",
        "other node p99 latency (ms)",
        "burst wall time per publish (µs)",
        "Redis CPU per publish (µs)",
    ];
    for (k, name) in names.iter().enumerate() {
        let (p, h) = (med(0, k), med(1, k));
        println!(
            "| {name} | {p:.3} | {h:.3} | {:+.3} | {:.2}× |",
            h - p,
            h / p.max(1e-9)
        );
    }
}

/// Time to recover `missed` messages: on a node with no member in the room (read from Redis)
/// and on the publisher's node (its ring covers it), in the same rounds.
async fn recovery_table(redis: &RedisServer, quick: bool) {
    let (rounds, missed) = if quick { (2, 100u64) } else { (15, 1_000u64) };
    let (a, b) = (history_hub(), history_hub());
    let ca = RedisCluster::start(&a, config(&redis.url(), "ra")).expect("a");
    let cb = RedisCluster::start(&b, config(&redis.url(), "rb")).expect("b");
    assert!(ca.ready(Duration::from_secs(10)).await && cb.ready(Duration::from_secs(10)).await);
    let (mut from_redis, mut from_ring) = (Vec::new(), Vec::new());
    let pad = "x".repeat(60);
    for k in 0..rounds {
        let room = format!("h:rec{k}");
        let (tx, mut watch) = channel(QueueConfig::default().max_messages(1 << 14));
        let w = a.next_socket_id();
        a.register(WebSocket::new(w.clone(), tx))
            .await
            .expect("register");
        a.join_room(&w, &room).await.expect("join");
        assert!(ca.synced(Duration::from_secs(10)).await);
        a.broadcast_to_room(&room, SocketMessage::text("first"))
            .await
            .expect("first");
        watch.recv().await.expect("first back");
        // The ring's top moves right after the fan-out that queued "first".
        let since = loop {
            let p = a.room_position(&room).expect("history room");
            if p.offset == 1 {
                break p;
            }
            tokio::task::yield_now().await;
        };
        for _ in 0..missed {
            a.broadcast_to_room(&room, SocketMessage::text(pad.clone()))
                .await
                .expect("b");
        }
        for _ in 0..missed {
            watch.recv().await.expect("watched");
        }
        for (hub, out) in [(&b, &mut from_redis), (&a, &mut from_ring)] {
            let (tx, mut rx) = channel(QueueConfig::default().max_messages(1 << 14));
            let id = hub.next_socket_id();
            hub.register(WebSocket::new(id.clone(), tx))
                .await
                .expect("register");
            let t0 = Instant::now();
            let r = hub
                .join_room_since(&id, &room, Some(since))
                .await
                .expect("join");
            let took = t0.elapsed();
            let stats = if std::ptr::eq(hub, &b) {
                cb.stats()
            } else {
                ca.stats()
            };
            assert!(
                r.recovered && r.replayed == missed,
                "round {k}: {r:?} {stats:?}"
            );
            for _ in 0..missed {
                rx.try_recv().expect("replayed in the queue");
            }
            out.push(took.as_secs_f64() * 1e3);
            hub.unregister(&id).await;
        }
        a.unregister(&w).await;
    }
    let (redis_ms, ring_ms) = (median(from_redis), median(from_ring));
    println!();
    println!("| recover {missed} missed messages (median of {rounds}) | ms |");
    println!("|---|---:|");
    println!("| on a node without members in the room (XRANGE from Redis) | {redis_ms:.3} |");
    println!("| on a node that has listened all along (its ring) | {ring_ms:.3} |");
    ca.shutdown().await;
    cb.shutdown().await;
}
