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

transport_tests! {
#[tokio::test]
async fn a_silent_peer_is_pinged_then_closed_after_the_idle_timeout(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let server = start_on(t, &hub, rec.clone(), config()).await;

    // A raw client never answers pings and never sends anything.
    let mut silent = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    let mut pings = 0;
    let code = silent
        .read_until_close(|f| {
            if f.opcode == OP_PING {
                pings += 1;
            }
        })
        .await;
    assert_eq!(code, Some(1001), "idle close");
    assert!(pings >= 1, "the server pinged before giving up");
    drop(silent);
    eventually("on_disconnect", || rec.disconnects().len() == 1).await;
    assert_eq!(hub.connection_count().await, 0);
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
