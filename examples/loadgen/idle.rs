//! Idle mode: hold joined connections, report the server's RSS per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::args::Args;
use crate::client::{close_all, connect_all, settle};
use crate::procfs::{Proc, ProcSample};

pub(crate) async fn idle(
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
