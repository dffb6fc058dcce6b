//! Heartbeats: the server pings, answers pings, and closes a peer that has gone silent,
//! while a live peer that answers pings stays connected.

use std::time::Duration;

use crate::support::wire::*;
use futures_util::{SinkExt, StreamExt};
use nucleus_stream::StreamHub;
use nucleus_stream::server::ServerConfig;
use tokio_tungstenite::tungstenite::Message;

fn config() -> ServerConfig {
    ServerConfig::default()
        .ping_interval(Duration::from_millis(40))
        .idle_timeout(Duration::from_millis(250))
}

/// A raw client that never answers pings and never sends anything is pinged, then closed
/// with 1001; its disconnect is the `nth` one the recorder saw, and the hub is left empty.
async fn silent_peer_is_pinged_then_closed(
    server: &TestServer,
    hub: &StreamHub,
    rec: &Recorder,
    nth: usize,
) {
    let mut silent = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    let mut pings = 0;
    let code = silent
        .read_until_close(|f| pings += usize::from(f.opcode == OP_PING))
        .await;
    assert_eq!(code, Some(1001), "idle close ({nth})");
    assert!(pings >= 1, "the server pinged before giving up ({nth})");
    drop(silent);
    eventually("on_disconnect", || rec.disconnects().len() == nth).await;
    assert_eq!(hub.connection_count().await, 0);
}

transport_tests! {
#[tokio::test]
async fn a_silent_peer_is_pinged_then_closed_after_the_idle_timeout(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let server = start_on(t, &hub, rec.clone(), config()).await;

    silent_peer_is_pinged_then_closed(&server, &hub, &rec, 1).await;
}
}

transport_tests! {
#[tokio::test]
async fn a_live_peer_answering_pings_outlives_several_idle_timeouts(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let config = ServerConfig::default()
        .ping_interval(Duration::from_millis(30))
        .idle_timeout(Duration::from_millis(400));
    let server = start_on(t, &hub, rec.clone(), config).await;

    // The raw client answers each ping with a pong, and sends nothing else.
    let mut live = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    let mut pongs = 0;
    while pongs < 40 {
        // 40 pings at 30 ms span ~3 idle timeouts.
        let frame = live.read_frame().await.expect("still open");
        assert_ne!(frame.opcode, OP_CLOSE, "a live peer was closed");
        if frame.opcode == OP_PING {
            live.send_frame(true, OP_PONG, &frame.payload).await;
            pongs += 1;
        }
    }
    assert_eq!(hub.connection_count().await, 1);
    live.send_text("still here").await;
    let echo = loop {
        let f = live.read_frame().await.expect("echo");
        if f.opcode == OP_TEXT {
            break f.payload;
        }
    };
    assert_eq!(echo, b"still here");
    assert!(rec.disconnects().is_empty());
}
}

transport_tests! {
#[tokio::test]
async fn client_pings_are_answered_with_pongs_carrying_the_payload(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let server = start_on(t, &hub, rec.clone(), ServerConfig::default()).await;
    let mut client = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    client.send_frame(true, OP_PING, b"are you there").await;
    let pong = client.read_frame().await.expect("pong");
    assert_eq!(pong.opcode, OP_PONG);
    assert_eq!(pong.payload, b"are you there");

    // Through tokio-tungstenite too, interleaved with data.
    let mut ws = ws_connect(server.local_addr(), "/").await;
    ws.send(Message::Ping("p1".into())).await.unwrap();
    send_text(&mut ws, "data").await;
    // Read until both the pong and the echo arrived: the pong is asserted, not skipped.
    let (mut pong, mut echo) = (None, None);
    while pong.is_none() || echo.is_none() {
        let msg = within("the pong and the echo", ws.next())
            .await
            .expect("connection open")
            .expect("a message");
        match msg {
            Message::Pong(p) => pong = Some(p),
            Message::Text(t) => echo = Some(t.to_string()),
            Message::Close(c) => panic!("closed before the pong: {c:?}"),
            _ => {}
        }
    }
    assert_eq!(
        pong.as_deref(),
        Some(&b"p1"[..]),
        "the pong carries the ping's payload"
    );
    assert_eq!(echo.as_deref(), Some("data"));
}
}

transport_tests! {
#[tokio::test]
async fn the_shared_sweep_stops_when_nobody_is_left_and_starts_again_for_the_next_one(t) {
    // One sweep per service beats for every connection; it ends at the first sweep that
    // finds no connection. A connection that comes later must get heartbeats again.
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let server = start_on(t, &hub, rec.clone(), config()).await;
    for round in 1..=2 {
        silent_peer_is_pinged_then_closed(&server, &hub, &rec, round).await;
        // Several sweep periods (20 ms here) with nobody connected: the sweep ends.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
}

transport_tests! {
#[tokio::test]
async fn one_sweep_keeps_many_live_peers_open_and_closes_only_the_silent_one(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let server = start_on(t, &hub, rec.clone(), config()).await;
    // Each live peer is read all the time (tokio-tungstenite answers pings while polled);
    // its task counts the pings and returns whether the stream is still open.
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut live = Vec::new();
    for _ in 0..20 {
        let mut ws = ws_connect(server.local_addr(), "/").await;
        let stop = std::sync::Arc::clone(&stop);
        live.push(tokio::spawn(async move {
            let mut pings = 0;
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    _ = &mut stopped => return (true, pings),
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Ping(_))) => pings += 1,
                        Some(Ok(_)) => {}
                        _ => return (false, pings),
                    },
                }
            }
        }));
    }
    let mut silent = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    let code = silent.read_until_close(|_| {}).await;
    assert_eq!(code, Some(1001), "the silent one is closed");
    // Past another idle timeout (250 ms): the live ones answered every ping meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.notify_waiters();
    for peer in live {
        let (open, pings) = within("a live peer's task", peer).await.unwrap();
        assert!(open, "a live peer was closed");
        assert!(pings >= 5, "a live peer got pings all along: {pings}");
    }
    assert_eq!(hub.connection_count().await, 20);
    assert_eq!(rec.disconnects().len(), 1);
}
}
