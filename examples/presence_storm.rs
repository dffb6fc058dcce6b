//! A join storm against the chat example: N clients connect, then all join one room, spread
//! evenly over a few seconds; each reads until its presence view holds all N. Prints how many
//! presence frames (states and diffs) each member received, and the bytes.
//!
//! ```text
//! cargo build --release --example chat --example presence_storm
//! target/release/examples/chat 127.0.0.1:9001 &
//! target/release/examples/presence_storm ws://127.0.0.1:9001 --clients 10000 --over-ms 2000
//! ```
//!
//! Before presence diffs, the chat example announced every join to the whole room: the
//! storm cost member i the N - i later joins (N²/2 messages in all, ~50 million at 10,000).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

struct Args {
    url: String,
    clients: usize,
    over: Duration,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        url: "ws://127.0.0.1:9001".into(),
        clients: 10_000,
        over: Duration::from_millis(2_000),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match a.as_str() {
            "--clients" => args.clients = num("--clients")? as usize,
            "--over-ms" => args.over = Duration::from_millis(num("--over-ms")?),
            url if !url.starts_with("--") => args.url = url.to_string(),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

fn raise_open_files(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The fields of a server frame the storm looks at (borrowed: no allocation per key).
#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow, default)]
    joins: Vec<&'a str>,
    #[serde(borrow, default)]
    leaves: Vec<&'a str>,
    #[serde(borrow, default)]
    members: Vec<&'a str>,
}

/// What one member saw.
struct Seen {
    frames: usize,
    bytes: usize,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = parse()?;
    raise_open_files(args.clients as u64 + 256);
    let mut sockets = Vec::with_capacity(args.clients);
    let t0 = Instant::now();
    for i in 0..args.clients {
        let (ws, _) = tokio_tungstenite::connect_async(&args.url)
            .await
            .map_err(|e| format!("connect #{i}: {e}"))?;
        sockets.push(ws);
    }
    println!(
        "connected {} clients in {:.2} s",
        args.clients,
        t0.elapsed().as_secs_f64()
    );
    let room = format!("storm-{}", std::process::id());
    let start = Instant::now() + Duration::from_millis(100);
    let step = args.over / args.clients.max(1) as u32;
    let n = args.clients;
    let done = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = Vec::new();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let room = room.clone();
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((start + step * i as u32).into()).await;
            let join = format!(r#"{{"action":"join","room":"{room}"}}"#);
            ws.send(Message::text(join))
                .await
                .map_err(|e| e.to_string())?;
            // Every member tracks its view's size; every 100th also its exact content (the
            // harness shares one core with 10,000 clients: parsing every key of every frame
            // into a set would make it, not the server, the bottleneck).
            let exact = i % 100 == 0;
            let mut view: BTreeSet<String> = BTreeSet::new();
            let mut size: usize = 0;
            let mut seen = Seen {
                frames: 0,
                bytes: 0,
            };
            while size < n {
                let frame = match ws.next().await {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    other => return Err(format!("client {i}: connection ended: {other:?}")),
                };
                let f: Frame<'_> = serde_json::from_str(&frame).map_err(|e| e.to_string())?;
                match f.kind {
                    "presence_diff" => {
                        size = size + f.joins.len() - f.leaves.len();
                        if exact {
                            for k in &f.leaves {
                                view.remove(*k);
                            }
                            view.extend(f.joins.iter().map(|k| k.to_string()));
                        }
                    }
                    "presence_state" => {
                        size = f.members.len();
                        if exact {
                            view = f.members.iter().map(|k| k.to_string()).collect();
                        }
                    }
                    _ => continue,
                }
                seen.frames += 1;
                seen.bytes += frame.len();
            }
            if exact && view.len() != n {
                return Err(format!("client {i}: view of {} != {n}", view.len()));
            }
            let complete = start.elapsed();
            done.add_permits(1);
            // Stay connected until every member is complete: a leave would change the views.
            let _ = done.acquire_many(n as u32).await.map(|p| p.forget());
            done.add_permits(n);
            Ok::<_, String>((seen, complete, ws))
        }));
    }
    let mut frames = Vec::with_capacity(n);
    let mut bytes = 0usize;
    let mut slowest = Duration::ZERO;
    let mut keep = Vec::with_capacity(n);
    for t in tasks {
        let (seen, complete, ws) = t.await.map_err(|e| e.to_string())??;
        frames.push(seen.frames);
        bytes += seen.bytes;
        slowest = slowest.max(complete);
        keep.push(ws);
    }
    frames.sort_unstable();
    let mean = frames.iter().sum::<usize>() as f64 / n as f64;
    println!(
        "{n} joins spread over {:.1} s; every view complete {:.2} s after the first join",
        args.over.as_secs_f64(),
        slowest.as_secs_f64()
    );
    println!(
        "presence frames per member: max {}, median {}, mean {mean:.1}; {:.1} KiB per member",
        frames[n - 1],
        frames[n / 2],
        bytes as f64 / n as f64 / 1024.0
    );
    println!(
        "per-join announcements would have been: max {}, mean {:.1} ({} in all)",
        n - 1,
        (n - 1) as f64 / 2.0,
        n * (n - 1) / 2
    );
    Ok(())
}
