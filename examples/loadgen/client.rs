//! WebSocket clients of the chat protocol: connect, join, the message text format, the read
//! loop that checks every delivery.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::args::Args;
use crate::histogram::Histogram;

/// Shared counters (the runtime is single-threaded; atomics keep the types simple).
pub(crate) struct Counters {
    /// Per publisher: messages sent.
    pub(crate) sent: Vec<AtomicU64>,
    /// Per publisher: deliveries to any member (subscribers and publishers).
    pub(crate) delivered: Vec<AtomicU64>,
    /// Per publisher: members of its room (fixed once everyone joined).
    pub(crate) fanout: Vec<AtomicU64>,
    /// Per publisher: woken when its deliveries advance while it waits.
    pub(crate) progress: Vec<Notify>,
    /// Per publisher: set while it waits for its window.
    pub(crate) waiting: Vec<AtomicBool>,
    /// Deliveries to subscriber connections only.
    pub(crate) subscriber_deliveries: AtomicU64,
    /// Error frames received.
    pub(crate) errors: AtomicU64,
    /// `joined` announcements received by the read loops (other members' joins).
    pub(crate) announcements: AtomicU64,
    pub(crate) disconnected: AtomicUsize,
    pub(crate) window: u64,
    /// `--timeline`: per slice of send time, deliveries, those over 2 ms, and the slice's
    /// largest latency (ns); empty without the flag.
    pub(crate) timeline: Vec<[AtomicU64; 3]>,
    /// Width of one `--timeline` slice, in ns (non-zero).
    pub(crate) slice_ns: u64,
}

/// What one connection saw.
pub(crate) struct ConnReport {
    pub(crate) histogram: Histogram,
    /// Per publisher: messages received from it.
    pub(crate) received: Vec<u64>,
    pub(crate) out_of_order: u64,
    pub(crate) duplicates: u64,
    pub(crate) error_frames: u64,
    pub(crate) closed_early: Option<String>,
}

pub(crate) type Ws = WebSocketStream<TcpStream>;

pub(crate) async fn connect(args: &Args) -> Result<Ws, String> {
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

/// Like [`connect`], with a 4 KiB receive window (a client that stops reading backs the
/// server up quickly).
pub(crate) async fn connect_small_window(args: &Args) -> Result<Ws, String> {
    let addr: std::net::SocketAddr = args
        .host_port
        .parse()
        .map_err(|e| format!("{}: {e}", args.host_port))?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.set_recv_buffer_size(4096).ok();
    let tcp = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true).ok();
    let (ws, _) = client_async_with_config(args.url.as_str(), tcp, None)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// Reads until the server's close frame: its code (`None`: no close frame, or timeout).
pub(crate) async fn close_code(ws: &mut Ws, limit: Duration) -> Option<u16> {
    let reading = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(frame) = m {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    };
    tokio::time::timeout(limit, reading).await.ok().flatten()
}

pub(crate) fn join_frame(room: &str) -> String {
    format!("{{\"action\":\"join\",\"room\":\"{room}\"}}")
}

pub(crate) fn room_name(r: usize) -> String {
    format!("load-{r}")
}

/// The text of a message: publisher, sequence, send time (ns since `origin`), padding.
pub(crate) fn message_text(publisher: usize, seq: u64, sent_ns: u64, size: usize) -> String {
    let mut t = String::with_capacity(size);
    let _ = write!(t, "{publisher} {seq} {sent_ns} ");
    while t.len() < size {
        t.push('.');
    }
    t
}

/// Extracts T from a `{"type":"message",...,"text":T}` frame (T has no escapes: we made it).
pub(crate) fn message_text_of(frame: &str) -> Option<&str> {
    if !frame.contains("\"type\":\"message\"") {
        return None;
    }
    let start = frame.find("\"text\":\"")? + 8;
    let len = frame[start..].find('"')?;
    Some(&frame[start..start + len])
}

pub(crate) fn parse_text(t: &str) -> Option<(usize, u64, u64)> {
    let mut it = t.split(' ');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

/// Joins `room` and waits for this connection's own `joined` announcement (the first one it
/// can see: it receives a room's announcements only once it is a member).
pub(crate) async fn join(ws: &mut Ws, room: &str) -> Result<(), String> {
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
pub(crate) async fn read_loop(
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
                let latency = now.saturating_sub(sent_ns);
                report.histogram.record(latency);
                if let Some(slice) = counters
                    .timeline
                    .get((sent_ns / counters.slice_ns) as usize)
                {
                    slice[0].fetch_add(1, Ordering::Relaxed);
                    if latency > 2_000_000 {
                        slice[1].fetch_add(1, Ordering::Relaxed);
                    }
                    slice[2].fetch_max(latency, Ordering::Relaxed);
                }
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

pub(crate) fn fmt_ns(ns: u64) -> String {
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

pub(crate) fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0} ")
    }
}

/// Connects `n` sockets with bounded parallelism, joining socket i to room `room_of(i)`.
pub(crate) async fn connect_all(
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

/// Sends a close frame on every connection (bounded in time), so the server sees clean
/// closes rather than resets.
pub(crate) async fn close_all(
    sinks: impl IntoIterator<Item = futures_util::stream::SplitSink<Ws, Message>>,
) {
    let closing = async {
        for mut sink in sinks {
            let _ = sink.close().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
}

/// Waits until `counter` reaches `target`, or stops moving for a second, or `limit` passes.
pub(crate) async fn settle(counter: &AtomicU64, target: u64, limit: Duration) {
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
