//! The axum_chat example: its page and the chat protocol on one port, `?user=NAME` through
//! the auth hook, and a graceful shutdown that reaches every WebSocket.

// The example includes examples/chat.rs, which chat_protocol.rs includes too.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../examples/axum_chat.rs"]
mod axum_chat;

use std::net::SocketAddr;

use nucleus_stream::StreamHub;
use nucleus_stream::server::ServerConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::wire::*;

/// The next frame that is not a presence diff or state (those come on the window's timer).
async fn recv_json(ws: &mut WsClient) -> Value {
    loop {
        let v: Value = serde_json::from_str(&next_text(ws).await.expect("a frame")).expect("JSON");
        if !matches!(v["type"].as_str(), Some("presence_diff" | "presence_state")) {
            return v;
        }
    }
}

/// Waits for a presence diff or state that shows `key` in the room.
async fn recv_presence_of(ws: &mut WsClient, key: &str) {
    loop {
        let v: Value = serde_json::from_str(&next_text(ws).await.expect("a frame")).expect("JSON");
        let list = match v["type"].as_str() {
            Some("presence_diff") => &v["joins"],
            Some("presence_state") => &v["members"],
            _ => continue,
        };
        if list.as_array().is_some_and(|l| l.iter().any(|k| k == key)) {
            return;
        }
    }
}

#[tokio::test]
async fn the_page_and_the_chat_share_one_port_and_shutdown_reaches_every_socket() {
    let hub = StreamHub::new();
    let (app, ws) = axum_chat::app(&hub, ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = ws.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(serving.shutdown_on(async {
            stop_rx.await.ok();
        }))
        .await
        .unwrap();
    });

    // The page.
    let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    within("the page", http.read_to_string(&mut page))
        .await
        .unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("new WebSocket(url)"),
        "the page speaks WebSocket"
    );

    // Two users chat; a bad name is refused by the demo login.
    assert_eq!(
        RawClient::connect(addr, "/ws?user=no%20spaces", &[])
            .await
            .expect_refused(),
        400
    );
    let mut alice = ws_connect(addr, "/ws?user=alice").await;
    let mut bob = ws_connect(addr, "/ws?user=bob").await;
    for c in [&mut alice, &mut bob] {
        send_text(c, &json!({"action": "join", "room": "lobby"}).to_string()).await;
        assert_eq!(recv_json(c).await["type"], "joined");
    }
    // Bob's arrival reaches alice as batched presence (a diff, or her first state).
    within("bob's presence", recv_presence_of(&mut alice, "bob")).await;
    assert!(hub.is_user_online("alice").await && hub.is_user_online("bob").await);
    send_text(
        &mut alice,
        &json!({"action": "message", "room": "lobby", "text": "hi bob"}).to_string(),
    )
    .await;
    for c in [&mut alice, &mut bob] {
        let m = recv_json(c).await;
        assert_eq!(
            (m["type"].as_str(), m["text"].as_str()),
            (Some("message"), Some("hi bob"))
        );
    }
    // Presence through the demo login.
    send_text(&mut bob, &json!({"action": "online"}).to_string()).await;
    let online = recv_json(&mut bob).await;
    assert_eq!(online["type"], "online");
    assert_eq!(online["users"], json!(["alice", "bob"]));
    send_text(&mut bob, "not json").await;
    assert_eq!(recv_json(&mut bob).await["type"], "error");

    // Ctrl-C: axum stops, every socket gets 1001, the route reports when all are gone.
    stop.send(()).unwrap();
    within("axum::serve to return", server).await.unwrap();
    assert_eq!(close_code(&mut alice).await, Some(1001));
    assert_eq!(close_code(&mut bob).await, Some(1001));
    drop((alice, bob));
    within("every connection to end", ws.stopped()).await;
    assert_eq!(hub.connection_count().await, 0);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "not accepting"
    );
}
