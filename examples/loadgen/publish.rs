//! The publishing run: subscribers and publishers, fixed rate or saturating.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::args::{Args, rooms_for};
use crate::client::*;
use crate::histogram::Histogram;
use crate::idle::idle;
use crate::procfs::{Proc, raise_nofile};

pub(crate) async fn run(args: Args) -> Result<(), String> {
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
    if args.churn.is_some() {
        return crate::churn::churn(&args, server.as_ref()).await;
    }
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
    let base = server.as_ref().and_then(Proc::sample);
    let t0 = Instant::now();
    // Non-readers join first: the readers' join announcements then count as usual.
    let mut non_readers = Vec::with_capacity(args.non_readers);
    for i in 0..args.non_readers {
        let mut ws = connect_small_window(&args).await?;
        join(&mut ws, &room_name(i % rooms)).await?;
        non_readers.push(ws);
    }
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
        timeline: match args.timeline {
            // Slices of send time from `origin`: the measured phase, the settling before it
            // (up to 30 s) and some slack.
            Some(slice) => {
                let slices = (args.duration.as_nanos() as u64 + 40_000_000_000) / slice;
                (0..slices).map(|_| Default::default()).collect()
            }
            None => Vec::new(),
        },
        slice_ns: args.timeline.unwrap_or(1),
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
    let connections = (args.subscribers + args.publishers + args.non_readers).max(1);
    let settled_per_connection = match (base, before) {
        (Some(b), Some(a)) => {
            let per = (a.rss_kib.saturating_sub(b.rss_kib) * 1024) as f64 / connections as f64;
            println!(
                "joins settled   server RSS {:.1} MiB: {per:.0} bytes per connection above the {:.1} MiB before connecting",
                a.rss_kib as f64 / 1024.0,
                b.rss_kib as f64 / 1024.0
            );
            per
        }
        _ => 0.0,
    };
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
    // The non-readers read now: what the server still sent them, then its close code.
    let non_reader_count = non_readers.len();
    let mut codes = Vec::new();
    for mut ws in non_readers {
        codes.push(tokio::spawn(async move {
            close_code(&mut ws, Duration::from_secs(8)).await
        }));
    }
    let mut closed_1008 = 0;
    let mut other_codes = Vec::new();
    for c in codes {
        match c.await.ok().flatten() {
            Some(1008) => closed_1008 += 1,
            other => other_codes.push(other),
        }
    }
    if non_reader_count > 0 {
        println!(
            "non-readers     {closed_1008} of {non_reader_count} closed with 1008{}",
            if other_codes.is_empty() {
                String::new()
            } else {
                format!("; others: {:?}", &other_codes[..other_codes.len().min(5)])
            }
        );
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
    for (i, slice) in counters.timeline.iter().enumerate() {
        let n = slice[0].load(Ordering::Relaxed);
        if n > 0 {
            println!(
                "timeline {:>6} ms  {n:>7} deliveries  {:>6} over 2 ms  max {}",
                i as u64 * counters.slice_ns / 1_000_000,
                slice[1].load(Ordering::Relaxed),
                fmt_ns(slice[2].load(Ordering::Relaxed))
            );
        }
    }
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
            "RESULT delivered_per_s={:.0} lost={lost} p50_ns={} p99_ns={} p999_ns={} server_cpu_ns_per_delivery={:.0} server_rss_kib={} non_readers={non_reader_count} closed_1008={closed_1008} settled_rss_bytes_per_connection={settled_per_connection:.0}",
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
