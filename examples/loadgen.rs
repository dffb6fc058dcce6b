//! End-to-end load generator for the chat example, over loopback WebSockets.
//!
//! N subscribers and P publishers connect to the chat server (`examples/chat.rs`), join
//! rooms, and publishers send `{"action":"message","room":R,"text":T}` where T carries the
//! publisher's index, a per-publisher sequence number and the send timestamp, padded to
//! `--size` bytes. Every member of the room (the sender included) receives
//! `{"type":"message",...,"text":T}`; the generator counts deliveries, checks per-publisher
//! sequence numbers on every connection (so loss, duplicates and reordering are exact), and
//! records latency (receive time − send time, one clock in one process).
//!
//! Modes:
//! - **fixed rate** (`--rate R`: messages per second per publisher) or **saturating**
//!   (default): each publisher keeps at most `--window W` messages in flight, where a message
//!   is in flight until every member of its room has received it.
//! - **idle** (`--idle`): connects N sockets, joins them (100 per room unless `--rooms`),
//!   waits for the server to settle and reports the server's RSS per connection.
//!
//! Given `--server-pid`, it reads the server's CPU time (all threads, `/proc/<pid>/task/*/schedstat`)
//! and RSS (`/proc/<pid>/status`) before and after the measured phase, and reports server CPU
//! per delivered message. It raises its own open-files limit to the hard limit and says so when
//! that limit caps N. Every run ends by itself (`--duration`, `--count`, `--drain-timeout`).
//!
//! Loopback only: the URL's host must be 127.0.0.0/8, `localhost` or `[::1]`.
//!
//! ```text
//! cargo build --release --example chat --example loadgen
//! taskset -c 0 target/release/examples/chat 127.0.0.1:9001 & SERVER=$!
//! taskset -c 1 target/release/examples/loadgen --server-pid $SERVER --subscribers 1000 --duration 10
//! taskset -c 1 target/release/examples/loadgen --server-pid $SERVER --idle --subscribers 10000
//! kill $SERVER
//! ```

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

const USAGE: &str = "\
loadgen: end-to-end load against the chat example (loopback only)

  --url URL            ws://127.0.0.1:9001 (host must be loopback)
  --subscribers N      receiving connections (default 1000)
  --publishers P       sending connections (default 1)
  --rooms R            rooms; subscribers and publishers are spread round-robin
                       (default 1; in --idle mode ceil(N/100))
  --size B             message text size in bytes (default 64, minimum 40)
  --rate R             fixed rate, messages/s per publisher (default: saturate)
  --window W           saturating: messages in flight per publisher (default 32)
  --duration S         seconds of publishing (default 10)
  --count M            stop each publisher after M messages (default: no limit)
  --drain-timeout S    after publishing, wait this long for stragglers (default 5)
  --server-pid PID     report the server's CPU time per delivered message and RSS
  --idle               hold N joined connections, report server RSS per connection
  --hold S             idle mode: seconds to hold the connections (default 2)
  --connect-parallel K concurrent connection attempts (default 128)
";

#[derive(Clone, Debug)]
struct Args {
    url: String,
    host_port: String,
    subscribers: usize,
    publishers: usize,
    rooms: Option<usize>,
    size: usize,
    rate: Option<f64>,
    window: u64,
    duration: Duration,
    count: Option<u64>,
    drain_timeout: Duration,
    server_pid: Option<u32>,
    idle: bool,
    hold: Duration,
    connect_parallel: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "ws://127.0.0.1:9001".to_string(),
        host_port: String::new(),
        subscribers: 1000,
        publishers: 1,
        rooms: None,
        size: 64,
        rate: None,
        window: 32,
        duration: Duration::from_secs(10),
        count: None,
        drain_timeout: Duration::from_secs(5),
        server_pid: None,
        idle: false,
        hold: Duration::from_secs(2),
        connect_parallel: 128,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{name}: cannot parse {v:?}"))
        }
        match flag.as_str() {
            "--url" => a.url = value("--url")?,
            "--subscribers" => a.subscribers = num("--subscribers", value("--subscribers")?)?,
            "--publishers" => a.publishers = num("--publishers", value("--publishers")?)?,
            "--rooms" => a.rooms = Some(num::<usize>("--rooms", value("--rooms")?)?.max(1)),
            "--size" => a.size = num("--size", value("--size")?)?,
            "--rate" => a.rate = Some(num("--rate", value("--rate")?)?),
            "--window" => a.window = num::<u64>("--window", value("--window")?)?.max(1),
            "--duration" => {
                a.duration = Duration::from_secs_f64(num("--duration", value("--duration")?)?)
            }
            "--count" => a.count = Some(num("--count", value("--count")?)?),
            "--drain-timeout" => {
                a.drain_timeout =
                    Duration::from_secs_f64(num("--drain-timeout", value("--drain-timeout")?)?)
            }
            "--server-pid" => a.server_pid = Some(num("--server-pid", value("--server-pid")?)?),
            "--idle" => a.idle = true,
            "--hold" => a.hold = Duration::from_secs_f64(num("--hold", value("--hold")?)?),
            "--connect-parallel" => {
                a.connect_parallel =
                    num::<usize>("--connect-parallel", value("--connect-parallel")?)?.max(1)
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.size = a.size.max(40);
    if a.idle {
        a.publishers = 0;
    } else if a.publishers == 0 {
        return Err("--publishers must be at least 1 (or use --idle)".to_string());
    }
    a.host_port = loopback_host_port(&a.url)?;
    Ok(a)
}

/// `host:port` of a `ws://` URL whose host is a loopback address; anything else is refused.
fn loopback_host_port(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, p),
        _ => (authority, "80"),
    };
    let port: u16 = port.parse().map_err(|_| format!("{url}: bad port"))?;
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "{url}: refusing a non-loopback host; the load generator only targets this machine"
        ));
    }
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    Ok(format!("{host}:{port}"))
}

/// Raises the soft open-files limit to the hard limit; returns (soft, hard) after.
fn raise_nofile() -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        (lim.rlim_cur, lim.rlim_max)
    }
}

/// The server process, read from /proc.
struct Proc {
    pid: u32,
}

#[derive(Clone, Copy, Debug)]
struct ProcSample {
    cpu_ns: u64,
    rss_kib: u64,
    hwm_kib: u64,
    threads: usize,
}

impl Proc {
    /// CPU time of all threads in ns (schedstat: exact), falling back to utime+stime ticks.
    fn cpu_ns(&self) -> Option<u64> {
        let mut total = 0u64;
        let mut any = false;
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) {
            for task in dir.flatten() {
                if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat"))
                    && let Some(ns) = s
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<u64>().ok())
                {
                    total += ns;
                    any = true;
                }
            }
        }
        if any {
            return Some(total);
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some(ticks * 1_000_000_000 / hz)
    }

    fn status_kib(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn sample(&self) -> Option<ProcSample> {
        Some(ProcSample {
            cpu_ns: self.cpu_ns()?,
            rss_kib: self.status_kib("VmRSS:")?,
            hwm_kib: self.status_kib("VmHWM:").unwrap_or(0),
            threads: std::fs::read_dir(format!("/proc/{}/task", self.pid))
                .map(|d| d.count())
                .unwrap_or(0),
        })
    }

    /// The server's own soft open-files limit.
    fn nofile(&self) -> Option<u64> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid)).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }
}

/// Log-linear latency histogram: 32 sub-buckets per power of two (≤ 3% error).
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
    sum: u128,
}

const SUB_BITS: u32 = 5;

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: vec![0; 64 << SUB_BITS],
            count: 0,
            max: 0,
            sum: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < (1 << SUB_BITS) {
            return v as usize;
        }
        let top = 63 - v.leading_zeros();
        let shift = top - SUB_BITS;
        let sub = (v >> shift) & ((1 << SUB_BITS) - 1);
        (((shift + 1) << SUB_BITS) as u64 + sub) as usize
    }

    /// The middle of a bucket's value range.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < (1 << SUB_BITS) {
            return i;
        }
        let shift = (i >> SUB_BITS) - 1;
        let sub = i & ((1 << SUB_BITS) - 1);
        let low = ((1 << SUB_BITS) | sub) << shift;
        low + (1 << shift) / 2
    }

    fn record(&mut self, v: u64) {
        self.buckets[Self::index(v)] += 1;
        self.count += 1;
        self.max = self.max.max(v);
        self.sum += v as u128;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }
}

/// Shared counters (the runtime is single-threaded; atomics keep the types simple).
struct Counters {
    /// Per publisher: messages sent.
    sent: Vec<AtomicU64>,
    /// Per publisher: deliveries to any member (subscribers and publishers).
    delivered: Vec<AtomicU64>,
    /// Per publisher: members of its room (fixed once everyone joined).
    fanout: Vec<AtomicU64>,
    /// Per publisher: woken when its deliveries advance while it waits.
    progress: Vec<Notify>,
    /// Per publisher: set while it waits for its window.
    waiting: Vec<AtomicBool>,
    /// Deliveries to subscriber connections only.
    subscriber_deliveries: AtomicU64,
    /// Error frames received.
    errors: AtomicU64,
    /// `joined` announcements received by the read loops (other members' joins).
    announcements: AtomicU64,
    disconnected: AtomicUsize,
    window: u64,
}

/// What one connection saw.
struct ConnReport {
    histogram: Histogram,
    /// Per publisher: messages received from it.
    received: Vec<u64>,
    out_of_order: u64,
    duplicates: u64,
    error_frames: u64,
    closed_early: Option<String>,
}

type Ws = WebSocketStream<TcpStream>;

async fn connect(args: &Args) -> Result<Ws, String> {
    let tcp = TcpStream::connect(&args.host_port)
        .await
        .map_err(|e| format!("connect {}: {e}", args.host_port))?;
    tcp.set_nodelay(true).ok();
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    let (ws, _) = client_async_with_config(args.url.as_str(), tcp, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

fn join_frame(room: &str) -> String {
    format!("{{\"action\":\"join\",\"room\":\"{room}\"}}")
}

fn room_name(r: usize) -> String {
    format!("load-{r}")
}

/// The text of a message: publisher, sequence, send time (ns since `origin`), padding.
fn message_text(publisher: usize, seq: u64, sent_ns: u64, size: usize) -> String {
    let mut t = String::with_capacity(size);
    let _ = write!(t, "{publisher} {seq} {sent_ns} ");
    while t.len() < size {
        t.push('.');
    }
    t
}

/// Extracts T from a `{"type":"message",...,"text":T}` frame (T has no escapes: we made it).
fn message_text_of(frame: &str) -> Option<&str> {
    if !frame.contains("\"type\":\"message\"") {
        return None;
    }
    let start = frame.find("\"text\":\"")? + 8;
    let len = frame[start..].find('"')?;
    Some(&frame[start..start + len])
}

fn parse_text(t: &str) -> Option<(usize, u64, u64)> {
    let mut it = t.split(' ');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

/// Joins `room` and waits for this connection's own `joined` announcement (the first one it
/// can see: it receives a room's announcements only once it is a member).
async fn join(ws: &mut Ws, room: &str) -> Result<(), String> {
    ws.send(Message::text(join_frame(room)))
        .await
        .map_err(|e| format!("send join: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if t.contains("\"type\":\"joined\"") {
                    return Ok(());
                }
                if t.contains("\"type\":\"error\"") {
                    return Err(format!("join refused: {}", t.as_str()));
                }
            }
            Some(Ok(Message::Close(c))) => return Err(format!("closed while joining: {c:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("while joining: {e}")),
            None => return Err("closed while joining".to_string()),
        }
    }
}

/// Reads until `stop`, recording every message frame.
async fn read_loop(
    mut stream: futures_util::stream::SplitStream<Ws>,
    counters: Arc<Counters>,
    origin: Instant,
    publishers: usize,
    is_subscriber: bool,
    stop: Arc<Notify>,
) -> ConnReport {
    let mut report = ConnReport {
        histogram: Histogram::new(),
        received: vec![0; publishers],
        out_of_order: 0,
        duplicates: 0,
        error_frames: 0,
        closed_early: None,
    };
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let frame = tokio::select! {
            biased;
            f = stream.next() => f,
            _ = &mut stopped => break,
        };
        match frame {
            Some(Ok(Message::Text(t))) => {
                let Some(text) = message_text_of(&t) else {
                    if t.contains("\"type\":\"joined\"") {
                        counters.announcements.fetch_add(1, Ordering::Relaxed);
                    } else if t.contains("\"type\":\"error\"") {
                        report.error_frames += 1;
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                };
                let Some((p, seq, sent_ns)) = parse_text(text) else {
                    continue;
                };
                if p >= publishers {
                    continue;
                }
                let now = origin.elapsed().as_nanos() as u64;
                report.histogram.record(now.saturating_sub(sent_ns));
                let expected = report.received[p];
                if seq < expected {
                    report.duplicates += 1;
                    continue;
                }
                if seq > expected {
                    report.out_of_order += 1;
                }
                report.received[p] = seq + 1;
                if is_subscriber {
                    counters
                        .subscriber_deliveries
                        .fetch_add(1, Ordering::Relaxed);
                }
                let d = counters.delivered[p].fetch_add(1, Ordering::Relaxed) + 1;
                if counters.waiting[p].load(Ordering::Relaxed) {
                    let sent = counters.sent[p].load(Ordering::Relaxed);
                    let fanout = counters.fanout[p].load(Ordering::Relaxed);
                    // Wake the publisher once half its window has drained.
                    if sent * fanout - d.min(sent * fanout) <= counters.window * fanout / 2 {
                        counters.waiting[p].store(false, Ordering::Relaxed);
                        counters.progress[p].notify_one();
                    }
                }
            }
            Some(Ok(Message::Close(c))) => {
                report.closed_early = Some(format!("server closed: {c:?}"));
                counters.disconnected.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                report.closed_early = Some(format!("error: {e}"));
                counters.disconnected.fetch_add(1, Ordering::Relaxed);
                break;
            }
            None => {
                report.closed_early = Some("connection closed".to_string());
                counters.disconnected.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    report
}

fn rooms_for(args: &Args) -> usize {
    args.rooms.unwrap_or(if args.idle {
        args.subscribers.div_ceil(100).max(1)
    } else {
        1
    })
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 10_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0} ")
    }
}

/// Connects `n` sockets with bounded parallelism, joining socket i to room `room_of(i)`.
async fn connect_all(
    args: &Args,
    n: usize,
    room_of: impl Fn(usize) -> usize,
) -> Result<Vec<Ws>, String> {
    let sem = Arc::new(Semaphore::new(args.connect_parallel));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (sem, args, room) = (Arc::clone(&sem), args.clone(), room_name(room_of(i)));
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut ws = connect(&args).await?;
            join(&mut ws, &room).await?;
            Ok::<_, String>(ws)
        }));
    }
    let mut out = Vec::with_capacity(n);
    let mut first_error = None;
    let mut failed = 0;
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(ws) => out.push(ws),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(format!(
            "{failed} of {n} connections failed; first error: {e}"
        ));
    }
    Ok(out)
}

async fn run(args: Args) -> Result<(), String> {
    let (soft, hard) = raise_nofile();
    let needed = (args.subscribers + args.publishers + 64) as u64;
    let mut args = args;
    if soft < needed {
        let cap = (soft as usize).saturating_sub(args.publishers + 64);
        println!(
            "!! open-files limit: soft {soft}, hard {hard}; {needed} descriptors needed. \
             N is CAPPED at {cap} subscribers by this machine's limit (raise the hard limit: \
             `ulimit -Hn`, /etc/security/limits.conf)."
        );
        args.subscribers = cap;
    } else {
        println!("open-files limit raised to {soft} (hard {hard})");
    }
    let server = args.server_pid.map(|pid| Proc { pid });
    if let Some(s) = &server {
        match s.nofile() {
            Some(lim) if lim < needed => println!(
                "!! the server's own open-files limit is {lim}: it cannot hold {} connections \
                 (start it after `ulimit -n {hard}`)",
                args.subscribers + args.publishers
            ),
            Some(_) => {}
            None => println!("!! cannot read /proc/{}/limits", s.pid),
        }
    }
    let rooms = rooms_for(&args);
    if args.idle {
        let before = server.as_ref().and_then(Proc::sample);
        return idle(&args, rooms, server.as_ref(), before).await;
    }

    println!(
        "loadgen: {} subscribers, {} publishers, {rooms} rooms, {}-byte texts, {}, {:?} against {}",
        args.subscribers,
        args.publishers,
        args.size,
        match args.rate {
            Some(r) => format!("fixed rate {r}/s per publisher"),
            None => format!("saturating (window {} per publisher)", args.window),
        },
        args.duration,
        args.url,
    );
    let t0 = Instant::now();
    let subs = connect_all(&args, args.subscribers, |i| i % rooms).await?;
    let pubs = connect_all(&args, args.publishers, |p| p % rooms).await?;
    println!(
        "connected and joined {} sockets in {:.2} s",
        subs.len() + pubs.len(),
        t0.elapsed().as_secs_f64()
    );
    // Members per room: subscribers and publishers of that room.
    let mut members = vec![0u64; rooms];
    for i in 0..args.subscribers {
        members[i % rooms] += 1;
    }
    for p in 0..args.publishers {
        members[p % rooms] += 1;
    }
    let np = args.publishers;
    let counters = Arc::new(Counters {
        sent: (0..np).map(|_| AtomicU64::new(0)).collect(),
        delivered: (0..np).map(|_| AtomicU64::new(0)).collect(),
        fanout: (0..np)
            .map(|p| AtomicU64::new(members[p % rooms]))
            .collect(),
        progress: (0..np).map(|_| Notify::new()).collect(),
        waiting: (0..np).map(|_| AtomicBool::new(false)).collect(),
        subscriber_deliveries: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        announcements: AtomicU64::new(0),
        disconnected: AtomicUsize::new(0),
        window: args.window,
    });
    let origin = Instant::now();
    let stop = Arc::new(Notify::new());
    let mut readers = Vec::new();
    let mut sinks = Vec::new();
    for ws in subs {
        let (_sink, stream) = ws.split();
        sinks.push(_sink);
        readers.push(tokio::spawn(read_loop(
            stream,
            Arc::clone(&counters),
            origin,
            np,
            true,
            Arc::clone(&stop),
        )));
    }
    let mut pub_sinks = Vec::new();
    for ws in pubs {
        let (sink, stream) = ws.split();
        pub_sinks.push(sink);
        readers.push(tokio::spawn(read_loop(
            stream,
            Arc::clone(&counters),
            origin,
            np,
            false,
            Arc::clone(&stop),
        )));
    }
    // Every join was announced to the room's members: let those frames drain before the
    // measured phase, so it measures messages only.
    let announcements: u64 = members.iter().map(|&m| m * m.saturating_sub(1) / 2).sum();
    settle(
        &counters.announcements,
        announcements,
        Duration::from_secs(30),
    )
    .await;
    let before = server.as_ref().and_then(Proc::sample);
    let start = Instant::now();
    let mut publishers = Vec::new();
    for (p, mut sink) in pub_sinks.into_iter().enumerate() {
        let (counters, args) = (Arc::clone(&counters), args.clone());
        let room = room_name(p % rooms);
        publishers.push(tokio::spawn(async move {
            let deadline = start + args.duration;
            let fanout = counters.fanout[p].load(Ordering::Relaxed);
            let mut seq = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let room_json = serde_json::to_string(&room).unwrap_or_default();
            loop {
                if Instant::now() >= deadline || args.count.is_some_and(|c| seq >= c) {
                    break;
                }
                match args.rate {
                    Some(rate) => {
                        let due = (start.elapsed().as_secs_f64() * rate) as u64;
                        if seq >= due {
                            tick.tick().await;
                            continue;
                        }
                    }
                    None => {
                        let delivered = counters.delivered[p].load(Ordering::Relaxed);
                        if seq * fanout - delivered.min(seq * fanout) >= args.window * fanout {
                            counters.waiting[p].store(true, Ordering::Relaxed);
                            // Bounded wait: a lost delivery must not hang the run.
                            let _ = tokio::time::timeout(
                                Duration::from_millis(100),
                                counters.progress[p].notified(),
                            )
                            .await;
                            continue;
                        }
                    }
                }
                let now = origin.elapsed().as_nanos() as u64;
                let text = message_text(p, seq, now, args.size);
                let frame =
                    format!("{{\"action\":\"message\",\"room\":{room_json},\"text\":\"{text}\"}}");
                if let Err(e) = sink.send(Message::text(frame)).await {
                    return Err(format!("publisher {p}: {e}"));
                }
                seq += 1;
                counters.sent[p].store(seq, Ordering::Relaxed);
            }
            Ok::<_, String>(sink)
        }));
    }
    let mut pub_sinks = Vec::new();
    for p in publishers {
        match p.await.map_err(|e| e.to_string())? {
            Ok(sink) => pub_sinks.push(sink),
            Err(e) => println!("!! {e}"),
        }
    }
    let publish_time = start.elapsed();
    // Drain: wait until every expected delivery arrived, or the timeout.
    let expected: u64 = (0..np)
        .map(|p| {
            counters.sent[p].load(Ordering::Relaxed) * counters.fanout[p].load(Ordering::Relaxed)
        })
        .sum();
    let drain_start = Instant::now();
    loop {
        let got: u64 = counters
            .delivered
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum();
        if got >= expected || drain_start.elapsed() >= args.drain_timeout {
            break;
        }
        if counters.disconnected.load(Ordering::Relaxed) > 0
            && drain_start.elapsed() >= Duration::from_millis(500)
        {
            // Some connection is gone: what it missed will not come.
            let again: u64 = counters
                .delivered
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .sum();
            if again == got {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let after = server.as_ref().and_then(Proc::sample);
    stop.notify_waiters();
    let mut hist = Histogram::new();
    let (mut lost, mut ooo, mut dups, mut errs) = (0u64, 0u64, 0u64, 0u64);
    let mut early = Vec::new();
    let sent: Vec<u64> = counters
        .sent
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .collect();
    // Connection i < subscribers is a subscriber in room i % rooms; then publishers.
    for (i, r) in readers.into_iter().enumerate() {
        let report = r.await.map_err(|e| e.to_string())?;
        let room = if i < args.subscribers {
            i % rooms
        } else {
            (i - args.subscribers) % rooms
        };
        for (p, &s) in sent.iter().enumerate() {
            if p % rooms == room {
                lost += s.saturating_sub(report.received[p]);
            }
        }
        hist.merge(&report.histogram);
        ooo += report.out_of_order;
        dups += report.duplicates;
        errs += report.error_frames;
        if let Some(why) = report.closed_early {
            early.push(why);
        }
    }
    close_all(sinks.into_iter().chain(pub_sinks)).await;
    let total_sent: u64 = sent.iter().sum();
    let delivered: u64 = counters
        .delivered
        .iter()
        .map(|d| d.load(Ordering::Relaxed))
        .sum();
    let to_subs = counters.subscriber_deliveries.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    println!(
        "published       {total_sent} messages in {:.2} s ({}msg/s)",
        publish_time.as_secs_f64(),
        fmt_rate(total_sent as f64 / publish_time.as_secs_f64())
    );
    println!(
        "delivered       {delivered} ({}msg/s over {secs:.2} s incl. drain); {to_subs} to subscribers, {} echoes to publishers",
        fmt_rate(delivered as f64 / secs),
        delivered - to_subs
    );
    println!(
        "lost            {lost}   (gaps {ooo}, duplicates {dups}, error frames {errs}, connections closed early {})",
        early.len()
    );
    if let Some(why) = early.first() {
        println!("                first early close: {why}");
    }
    println!(
        "latency         p50 {}   p99 {}   p999 {}   max {}   mean {}   ({} samples)",
        fmt_ns(hist.quantile(0.50)),
        fmt_ns(hist.quantile(0.99)),
        fmt_ns(hist.quantile(0.999)),
        fmt_ns(hist.max),
        fmt_ns((hist.sum / u128::from(hist.count.max(1))) as u64),
        hist.count
    );
    if let (Some(s), Some(b), Some(a)) = (&server, before, after) {
        let cpu = a.cpu_ns.saturating_sub(b.cpu_ns);
        println!(
            "server pid {}  CPU {:.3} s ({:.0}% of one core over the run); {:.0} ns CPU per delivered message; RSS {:.1} MiB (peak {:.1} MiB), {} threads",
            s.pid,
            cpu as f64 / 1e9,
            cpu as f64 / 1e9 / secs * 100.0,
            cpu as f64 / delivered.max(1) as f64,
            a.rss_kib as f64 / 1024.0,
            a.hwm_kib as f64 / 1024.0,
            a.threads
        );
        println!(
            "RESULT delivered_per_s={:.0} lost={lost} p50_ns={} p99_ns={} p999_ns={} server_cpu_ns_per_delivery={:.0} server_rss_kib={}",
            delivered as f64 / secs,
            hist.quantile(0.5),
            hist.quantile(0.99),
            hist.quantile(0.999),
            cpu as f64 / delivered.max(1) as f64,
            a.rss_kib
        );
    } else {
        println!(
            "RESULT delivered_per_s={:.0} lost={lost} p50_ns={} p99_ns={} p999_ns={}",
            delivered as f64 / secs,
            hist.quantile(0.5),
            hist.quantile(0.99),
            hist.quantile(0.999)
        );
    }
    if lost > 0 || !early.is_empty() {
        return Err(format!(
            "{lost} messages lost, {} connections closed early",
            early.len()
        ));
    }
    Ok(())
}

/// Sends a close frame on every connection (bounded in time), so the server sees clean
/// closes rather than resets.
async fn close_all(sinks: impl IntoIterator<Item = futures_util::stream::SplitSink<Ws, Message>>) {
    let closing = async {
        for mut sink in sinks {
            let _ = sink.close().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
}

/// Waits until `counter` reaches `target`, or stops moving for a second, or `limit` passes.
async fn settle(counter: &AtomicU64, target: u64, limit: Duration) {
    let t0 = Instant::now();
    let (mut last, mut still_since) = (u64::MAX, Instant::now());
    loop {
        let now = counter.load(Ordering::Relaxed);
        if now >= target || t0.elapsed() >= limit {
            break;
        }
        if now != last {
            (last, still_since) = (now, Instant::now());
        } else if still_since.elapsed() >= Duration::from_secs(1) {
            println!("!! only {now} of {target} join announcements arrived; going on");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn idle(
    args: &Args,
    rooms: usize,
    server: Option<&Proc>,
    before: Option<ProcSample>,
) -> Result<(), String> {
    println!(
        "idle: {} connections in {rooms} rooms against {}",
        args.subscribers, args.url
    );
    let t0 = Instant::now();
    let subs = connect_all(args, args.subscribers, |i| i % rooms).await?;
    println!(
        "connected and joined {} sockets in {:.2} s",
        subs.len(),
        t0.elapsed().as_secs_f64()
    );
    // Keep reading (join announcements) so no server queue holds backlog, then settle.
    let stop = Arc::new(Notify::new());
    let mut readers = Vec::new();
    let mut sinks = Vec::new();
    let drained = Arc::new(AtomicU64::new(0));
    for ws in subs {
        let (sink, mut stream) = ws.split();
        sinks.push(sink);
        let (stop, drained) = (Arc::clone(&stop), Arc::clone(&drained));
        readers.push(tokio::spawn(async move {
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    f = stream.next() => match f {
                        Some(Ok(_)) => { drained.fetch_add(1, Ordering::Relaxed); }
                        _ => return false,
                    },
                    _ = &mut stopped => return true,
                }
            }
        }));
    }
    let mut members = vec![0u64; rooms];
    for i in 0..args.subscribers {
        members[i % rooms] += 1;
    }
    let announcements: u64 = members.iter().map(|&m| m * m.saturating_sub(1) / 2).sum();
    settle(&drained, announcements, Duration::from_secs(60)).await;
    tokio::time::sleep(args.hold).await;
    let after = server.and_then(Proc::sample);
    stop.notify_waiters();
    let mut alive = 0;
    for r in readers {
        if r.await.unwrap_or(false) {
            alive += 1;
        }
    }
    close_all(sinks).await;
    println!(
        "held {alive} of {} connections for {:?} ({} announcement frames read)",
        args.subscribers,
        args.hold,
        drained.load(Ordering::Relaxed)
    );
    if let (Some(s), Some(b), Some(a)) = (server, before, after) {
        let per = (a.rss_kib.saturating_sub(b.rss_kib) * 1024) as f64 / args.subscribers as f64;
        println!(
            "server pid {}  RSS before {:.1} MiB, with {} connections {:.1} MiB: {:.0} bytes ({:.2} KiB) per connection",
            s.pid,
            b.rss_kib as f64 / 1024.0,
            args.subscribers,
            a.rss_kib as f64 / 1024.0,
            per,
            per / 1024.0
        );
        println!(
            "RESULT idle_connections={} server_rss_bytes_per_connection={per:.0}",
            args.subscribers
        );
    } else {
        println!("(no --server-pid: server RSS not measured)");
    }
    if alive < args.subscribers {
        return Err(format!(
            "{} connections closed while idle",
            args.subscribers - alive
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
