//! The chat example's `--metrics` endpoint: real clients make real traffic, a plain HTTP
//! scrape reads Prometheus text, and every figure is checked against what the clients saw.
//! (The recorder is process-wide: this is the only test in the binary that installs one.)
//!
//! Bundled server only, not in `transport_tests!`: the endpoint is the example's own listener
//! (not a WebSocket route), and every figure it serves is the hub's, counted by the
//! connection driver both transports share (`src/server/connection.rs`); the Origin check and
//! the inbound limit do run on both (`server_events.rs`).

use crate::chat;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::support::wire::*;
use futures_util::SinkExt;
use nucleus_stream::StreamHub;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// `GET /metrics` and the samples of the answer, `name{labels}` → value.
async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut stream = within("metrics connect", TcpStream::connect(addr))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    within("metrics response", stream.read_to_string(&mut response))
        .await
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("name value");
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_serves_prometheus_text_that_matches_the_traffic() {
    let hub = StreamHub::new();
    let options =
        chat::Options::parse(["127.0.0.1:0", "--presence-window", "20"].map(String::from)).unwrap();
    let server = chat::start(&hub, &options).await.unwrap();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder in this test binary");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    tokio::spawn(chat::serve_metrics(listener, hub.clone(), prometheus));

    // Three clients in one room; each sends 4 messages; everyone reads everything.
    const CLIENTS: usize = 3;
    const EACH: usize = 4;
    let mut clients = Vec::new();
    let mut sent_frames = 0u64;
    let mut sent_bytes = 0u64;
    for _ in 0..CLIENTS {
        let mut ws = ws_connect(server.local_addr(), "/").await;
        let join = json!({"action": "join", "room": "m"}).to_string();
        sent_bytes += join.len() as u64;
        sent_frames += 1;
        ws.send(Message::text(join)).await.unwrap();
        clients.push(ws);
    }
    let mut received: Vec<Vec<String>> = vec![Vec::new(); CLIENTS];
    // Wait for each join's acknowledgement, and for the room's presence to settle: every
    // client's state or diffs must show all three (then no more presence frames come).
    for (ws, seen) in clients.iter_mut().zip(&mut received) {
        let mut members = std::collections::BTreeSet::new();
        while members.len() < CLIENTS {
            let t = next_text(ws).await.expect("a frame");
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            for k in v["joins"]
                .as_array()
                .into_iter()
                .chain(v["members"].as_array())
                .flatten()
            {
                members.insert(k.as_str().unwrap().to_string());
            }
            seen.push(t);
        }
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        for k in 0..EACH {
            let m =
                json!({"action": "message", "room": "m", "text": format!("{i}.{k}")}).to_string();
            sent_bytes += m.len() as u64;
            sent_frames += 1;
            ws.send(Message::text(m)).await.unwrap();
        }
    }
    for (ws, seen) in clients.iter_mut().zip(&mut received) {
        let mut messages = 0;
        while messages < CLIENTS * EACH {
            let t = next_text(ws).await.expect("a message");
            if t.contains(r#""type":"message""#) {
                messages += 1;
            }
            seen.push(t);
        }
    }
    // One client leaves with a close frame; the others see its leave.
    let mut gone = clients.pop().unwrap();
    gone.close(None).await.unwrap();
    let gone_seen = received.pop().unwrap();
    for (ws, seen) in clients.iter_mut().zip(&mut received) {
        let t = next_text(ws).await.expect("the leave");
        assert!(
            t.contains(r#""type":"presence_diff""#) && t.contains("leaves"),
            "{t}"
        );
        seen.push(t);
    }
    eventually("the close is counted", || {
        hub.totals()
            .disconnects_for(nucleus_stream::DisconnectReason::ClientClosed { code: None })
            == 1
    })
    .await;

    let m = scrape(metrics_addr).await;
    let frames_seen: usize = received.iter().map(Vec::len).sum::<usize>() + gone_seen.len();
    let bytes_seen: usize = received
        .iter()
        .flatten()
        .chain(&gone_seen)
        .map(String::len)
        .sum();
    assert_eq!(m["nucleus_messages_received_total"], sent_frames as f64);
    assert_eq!(m["nucleus_received_bytes_total"], sent_bytes as f64);
    assert_eq!(
        m["nucleus_messages_queued_total"], frames_seen as f64,
        "every frame a client read was queued once, and nothing else was"
    );
    assert_eq!(m["nucleus_queued_bytes_total"], bytes_seen as f64);
    assert_eq!(m["nucleus_messages_dropped_total"], 0.0);
    assert_eq!(m["nucleus_messages_rate_limited_total"], 0.0);
    assert_eq!(m["nucleus_connections"], (CLIENTS - 1) as f64);
    assert_eq!(m["nucleus_rooms"], 1.0);
    assert_eq!(m["nucleus_queued_messages"], 0.0);
    assert_eq!(
        m[r#"nucleus_disconnects_total{reason="client_closed"}"#],
        1.0
    );
    assert_eq!(
        m[r#"nucleus_disconnects_total{reason="slow_consumer"}"#],
        0.0
    );
    assert_eq!(m["nucleus_slow_consumer_closes_total"], 0.0);
    drop(clients);
}
