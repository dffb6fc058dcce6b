//! Churn mode: connect, join, disconnect, many times over; the server's RSS before and after.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Semaphore;

use crate::args::Args;
use crate::client::{connect, join, room_name};
use crate::procfs::Proc;

/// One cycle: connect, join a room, close (waiting for the server's close), bounded in time.
async fn cycle(args: &Args, i: u64) -> Result<(), String> {
    let work = async {
        let mut ws = connect(args).await?;
        join(&mut ws, &room_name(i as usize % 100)).await?;
        ws.close(None).await.map_err(|e| format!("close: {e}"))?;
        while let Some(Ok(_)) = ws.next().await {}
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "cycle timed out".to_string())?
}

async fn cycles(args: &Args, n: u64, failed: &Arc<AtomicU64>) {
    let sem = Arc::new(Semaphore::new(args.connect_parallel));
    let mut tasks = Vec::new();
    for i in 0..n {
        let Ok(permit) = Arc::clone(&sem).acquire_owned().await else {
            break;
        };
        let (args, failed) = (args.clone(), Arc::clone(failed));
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = cycle(&args, i).await {
                if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    println!("!! first failed cycle: {e}");
                }
            }
        }));
        if tasks.len() >= 4096 {
            for t in tasks.drain(..) {
                let _ = t.await;
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Runs `args.churn` cycles after a warm-up of 1,000, and reports the server's RSS before
/// (after the warm-up) and after (once it settled).
pub(crate) async fn churn(args: &Args, server: Option<&Proc>) -> Result<(), String> {
    let n = args.churn.unwrap_or(0);
    let failed = Arc::new(AtomicU64::new(0));
    println!(
        "churn: {n} connect/join/disconnect cycles ({} in parallel) against {}",
        args.connect_parallel, args.url
    );
    cycles(args, 1_000, &failed).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.and_then(Proc::sample);
    let t0 = Instant::now();
    cycles(args, n, &failed).await;
    let secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.and_then(Proc::sample);
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "{n} cycles in {secs:.1} s ({:.0}/s), {failed} failed",
        n as f64 / secs
    );
    if let (Some(s), Some(b), Some(a)) = (server, before, after) {
        let delta = a.rss_kib as i64 - b.rss_kib as i64;
        println!(
            "server pid {}  RSS after warm-up {:.1} MiB, after the cycles {:.1} MiB ({delta:+} KiB)",
            s.pid,
            b.rss_kib as f64 / 1024.0,
            a.rss_kib as f64 / 1024.0
        );
        println!(
            "RESULT churn_cycles={n} failed={failed} rss_before_kib={} rss_after_kib={} rss_delta_kib={delta}",
            b.rss_kib, a.rss_kib
        );
    }
    if failed > 0 {
        return Err(format!("{failed} cycles failed"));
    }
    Ok(())
}
