//! History and recovery through the chat example over real loopback WebSockets: a client
//! that disconnects and rejoins with `since` gets exactly what it missed, in order, then the
//! live stream, while another client publishes throughout; positions the history no longer
//! covers are answered with "not recovered".

use crate::chat;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::wire::*;
use futures_util::{SinkExt, StreamExt};
use nucleus_stream::StreamHub;
use nucleus_stream::server::ServerHandle;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn start_chat(history: usize) -> (StreamHub, ServerHandle) {
    // The bursts below send 100 messages back to back, past the chat's default inbound
    // limit (50/s, burst 100), which is not what these tests are about.
    let history = history.to_string();
    let argv = [
        "127.0.0.1:0",
        "--presence-window",
        "30",
        "--inbound-rate",
        "off",
        "--history",
        &history,
    ];
    let options = chat::Options::parse(argv.map(String::from)).expect("options");
    let hub = StreamHub::with_config(options.hub_config());
    let server = chat::start(&hub, &options).await.expect("bind");
    (hub, server)
}

async fn recv(ws: &mut WsClient) -> Value {
    let text = next_text(ws).await.expect("a frame");
    serde_json::from_str(&text).expect("server frames are JSON")
}

async fn send(ws: &mut WsClient, v: Value) {
    send_text(ws, &v.to_string()).await;
}

fn offset(frame: &Value) -> Option<u64> {
    frame["offset"].as_u64()
}

/// A frame sent to this client alone, outside the room's history: its `joined` answer (which
/// carries the room's position at the join, not a position of its own) and the
/// `presence_state` a joiner gets.
fn personal(frame: &Value) -> bool {
    frame["type"] == "joined"
        || (frame["type"] == "presence_state" && frame.get("offset").is_none())
}

/// Joins `room` live and reads up to its own `joined` frame; returns that frame.
async fn join_live(ws: &mut WsClient, room: &str) -> Value {
    send(ws, json!({"action": "join", "room": room})).await;
    loop {
        let f = recv(ws).await;
        if f["type"] == "joined" {
            return f;
        }
    }
}

/// A client that publishes `p-<n>` into `room` every 2 ms until stopped, reading (and
/// discarding) its own frames so it is never a slow consumer. Returns how many it sent.
struct Publisher {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_publisher(addr: SocketAddr, room: &str) -> Publisher {
    let mut ws = ws_connect(addr, "/").await;
    join_live(&mut ws, room).await;
    let (mut sink, mut stream) = ws.split();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (stop2, sent2, room) = (Arc::clone(&stop), Arc::clone(&sent), room.to_string());
    let task = tokio::spawn(async move {
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        let mut n = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let text = json!({"action": "message", "room": room, "text": format!("p-{n}")});
            if sink.send(Message::text(text.to_string())).await.is_err() {
                break;
            }
            n += 1;
            sent2.store(n, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = sink.close().await;
        reader.abort();
    });
    Publisher { stop, sent, task }
}

impl Publisher {
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("publisher task");
        self.sent.load(Ordering::Relaxed)
    }
}

/// Sends `n` messages `c-0..` from a member of `room` and waits until it has seen the last
/// one come back (so all of them are delivered).
async fn burst(addr: SocketAddr, room: &str, n: usize) -> WsClient {
    let mut ws = ws_connect(addr, "/").await;
    join_live(&mut ws, room).await;
    for i in 0..n {
        send(
            &mut ws,
            json!({"action": "message", "room": room, "text": format!("c-{i}")}),
        )
        .await;
    }
    let last = format!("c-{}", n - 1);
    loop {
        if recv(&mut ws).await["text"] == last.as_str() {
            return ws;
        }
    }
}

/// Connects, joins `room` live, reads its own join answer and `frames` more room frames,
/// and disconnects; returns the position of the last one (of the join answer if none).
async fn visit(addr: SocketAddr, room: &str, frames: usize) -> (u64, u64) {
    let mut ws = ws_connect(addr, "/").await;
    let mut last = join_live(&mut ws, room).await;
    let mut read = 0;
    while read < frames {
        let f = recv(&mut ws).await;
        if !personal(&f) {
            last = f;
            read += 1;
        }
    }
    ws.close(None).await.expect("close");
    let epoch = last["epoch"].as_u64().expect("room frames carry an epoch");
    (epoch, offset(&last).expect("room frames carry an offset"))
}

#[tokio::test]
async fn rejoin_with_since_gets_the_missed_100_in_order_then_live_while_another_publishes() {
    let (hub, server) = start_chat(1_000).await;
    let addr = server.local_addr();
    let publisher = start_publisher(addr, "r").await;
    let (epoch, seen) = visit(addr, "r", 5).await;

    // 100 broadcasts while the client is away (the publisher keeps going).
    let _burst = burst(addr, "r", 100).await;

    let mut ws = ws_connect(addr, "/").await;
    send(
        &mut ws,
        json!({"action": "join", "room": "r", "since": {"epoch": epoch, "offset": seen}}),
    )
    .await;
    let mut offsets = Vec::new();
    let mut texts = Vec::new();
    let mut recovery = None;
    // Read until the recovery answer and 50 live frames after its position.
    loop {
        let f = recv(&mut ws).await;
        if f["type"] == "recovery" {
            recovery = Some(f);
            continue;
        }
        if f["type"] == "joined" {
            // The join answer follows the recovery answer, at the same position.
            let r = recovery
                .as_ref()
                .expect("the recovery answer comes before `joined`");
            assert_eq!(offset(&f), offset(r), "{f}");
            continue;
        }
        if personal(&f) {
            continue;
        }
        assert_eq!(f["epoch"].as_u64(), Some(epoch), "{f}");
        let o = offset(&f).expect("room frames carry an offset");
        offsets.push(o);
        if let Some(t) = f["text"].as_str() {
            texts.push(t.to_string());
        }
        if let Some(r) = &recovery {
            if o >= offset(r).unwrap() + 50 {
                break;
            }
        }
    }
    let sent = publisher.stop().await;
    let recovery = recovery.unwrap();
    assert_eq!(recovery["recovered"], true, "{recovery}");
    assert_eq!(recovery["epoch"].as_u64(), Some(epoch));
    let top = offset(&recovery).unwrap();
    assert_eq!(recovery["replayed"].as_u64(), Some(top - seen));
    let want: Vec<u64> = (seen + 1..=*offsets.last().unwrap()).collect();
    assert_eq!(offsets, want, "no gap, no duplicate across replay and live");
    let from_burst: Vec<&String> = texts.iter().filter(|t| t.starts_with("c-")).collect();
    let want_burst: Vec<String> = (0..100).map(|i| format!("c-{i}")).collect();
    assert_eq!(from_burst, want_burst.iter().collect::<Vec<_>>());
    assert!(
        texts.iter().any(|t| t.starts_with("p-")),
        "the concurrent publisher's messages are in the stream"
    );
    assert!(sent > 0);
    assert!(hub.room_position("r").unwrap().offset >= top);
    server.shutdown_and_wait().await;
}

/// Reads the recovery answer of a join with `since` (the first frame: nothing is replayed
/// when it is not recovered) and checks that the live stream follows it.
async fn rejoin_not_recovered(addr: SocketAddr, since: Value) -> Value {
    let mut ws = ws_connect(addr, "/").await;
    send(
        &mut ws,
        json!({"action": "join", "room": "r", "since": since}),
    )
    .await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["type"], "recovery", "{answer}");
    assert_eq!(answer["recovered"], false, "{answer}");
    assert_eq!(answer["replayed"], 0, "{answer}");
    // Live: its join answer comes next, at the answer's position (nothing published since).
    let joined = recv(&mut ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(offset(&joined), offset(&answer));
    answer
}

#[tokio::test]
async fn a_position_beyond_the_window_or_of_another_epoch_is_not_recovered() {
    let (_hub, server) = start_chat(50).await;
    let addr = server.local_addr();
    let (epoch, seen) = visit(addr, "r", 0).await;
    let burst_client = burst(addr, "r", 100).await;

    // 100 missed > 50 kept.
    let answer = rejoin_not_recovered(addr, json!({"epoch": epoch, "offset": seen})).await;
    assert_eq!(answer["epoch"].as_u64(), Some(epoch));
    // Another epoch (a restarted server's, say).
    rejoin_not_recovered(addr, json!({"epoch": epoch ^ 1, "offset": seen})).await;
    // A position from the future.
    rejoin_not_recovered(addr, json!({"epoch": epoch, "offset": 1_000_000})).await;
    drop(burst_client);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_malformed_since_gets_an_error_frame_and_the_connection_stays() {
    let (_hub, server) = start_chat(50).await;
    let addr = server.local_addr();
    let mut ws = ws_connect(addr, "/").await;
    for bad in [
        json!({"action": "join", "room": "r", "since": {"epoch": -1, "offset": 0}}),
        json!({"action": "join", "room": "r", "since": {"offset": 3}}),
        json!({"action": "join", "room": "r", "since": "yesterday"}),
    ] {
        send(&mut ws, bad).await;
        let f = recv(&mut ws).await;
        assert_eq!(f["type"], "error", "{f}");
    }
    // Joined at the start of r's history: nothing published there yet.
    let joined = join_live(&mut ws, "r").await;
    assert!(joined["epoch"].as_u64().is_some(), "{joined}");
    assert_eq!(offset(&joined), Some(0));
    server.shutdown_and_wait().await;
}

#[test]
fn the_chat_stamp_adds_a_position_only_to_frames_built_without_one() {
    use nucleus_stream::{SocketMessage, StreamPosition};
    let pos = StreamPosition::new(7, 3);
    let plain = SocketMessage::text(r#"{"type":"message","text":"}"}"#);
    assert_eq!(
        chat::stamp_position(pos, &plain).as_text(),
        Some(r#"{"type":"message","text":"}","epoch":7,"offset":3}"#)
    );
    let built = r#"{"type":"message","epoch":7,"offset":3}"#;
    assert_eq!(
        chat::stamp_position(pos, &SocketMessage::text(built)).as_text(),
        Some(built)
    );
    assert_eq!(
        chat::stamp_position(pos, &SocketMessage::text("{}")).as_text(),
        Some(r#"{"epoch":7,"offset":3}"#)
    );
}
