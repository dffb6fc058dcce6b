//! Graceful shutdown: stop accepting, close 1001 to everyone, end within the deadline, and
//! resolve only when every connection is gone.

use std::time::Duration;

use crate::support::wire::*;
use nucleus_stream::server::ServerConfig;
use nucleus_stream::{SocketMessage, StreamHub};

transport_tests! {
#[tokio::test]
async fn shutdown_closes_every_client_with_1001_and_resolves_when_all_are_gone(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(Some("all"), false);
    let server = start_on(t, &hub, rec.clone(), ServerConfig::default()).await;
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "the bound port is readable");

    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(ws_connect(addr, "/").await);
    }
    eventually("five connects", || rec.connected_ids().len() == 5).await;
    // Something queued right before the shutdown is still delivered before the close.
    hub.broadcast_to_room("all", SocketMessage::text("last words"))
        .await
        .unwrap();

    server.shutdown();
    server.shutdown(); // idempotent
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let first = next_text(&mut ws).await;
                let code = close_code(&mut ws).await;
                (first, code)
            })
        })
        .collect();
    for r in readers {
        let (first, code) = r.await.unwrap();
        assert_eq!(first.as_deref(), Some("last words"));
        assert_eq!(code, Some(1001));
    }
    let handle = server.clone();
    within("the server to stop", async move { handle.stopped().await }).await;
    assert!(server.is_stopped());
    assert_eq!(server.connections(), 0);
    assert_eq!(
        hub.connection_count().await,
        0,
        "no hub entry outlives its connection"
    );
    assert!(hub.list_rooms().await.is_empty());

    // on_disconnect exactly once per connection.
    let mut connected = rec.connected_ids();
    let mut disconnected = rec.disconnects();
    connected.sort();
    disconnected.sort();
    assert_eq!(connected, disconnected);

    // Not accepting any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
}

transport_tests! {
#[tokio::test]
async fn shutdown_ends_at_the_deadline_even_if_clients_never_answer_the_close(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, false);
    let config = ServerConfig::default()
        .shutdown_timeout(Duration::from_millis(300))
        .close_timeout(Duration::from_secs(60));
    let server = start_on(t, &hub, rec.clone(), config).await;

    // Raw clients that never read and never close; one mid-handshake.
    let mut stubborn = Vec::new();
    for _ in 0..3 {
        stubborn.push(
            RawClient::connect(server.local_addr(), "/", &[])
                .await
                .expect_open(),
        );
    }
    // Only the bundled server's own handshake is tested here: axum::serve's graceful shutdown
    // waits for a connection stuck mid-request (hyper's business, not the route's).
    let half = if t == Transport::Bundled {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        Some(s)
    } else {
        None
    };
    // The bundled server counts the half handshake among its connections; behind axum it is
    // hyper's until it is a complete upgrade request.
    let accepted = if t == Transport::Bundled { 4 } else { 3 };
    eventually("every connection accepted", || server.connections() == accepted).await;
    eventually("three registered", || rec.connected_ids().len() == 3).await;

    server.clone().shutdown_and_wait().await;
    assert_eq!(server.connections(), 0);
    assert_eq!(hub.connection_count().await, 0);
    assert_eq!(
        rec.disconnects().len(),
        3,
        "each registered one disconnected once"
    );
    for mut c in stubborn {
        // Their connections are gone: they read the close frame, then EOF.
        assert_eq!(c.read_until_close(|_| {}).await, Some(1001));
        c.wait_eof().await;
    }
    drop(half);
}
}

/// A handler whose `on_message` never returns.
struct Stuck;

#[nucleus_stream::async_trait]
impl nucleus_stream::StreamHandler for Stuck {
    async fn on_message(&self, _: &StreamHub, _: &nucleus_stream::WebSocket, _: SocketMessage) {
        std::future::pending::<()>().await
    }
}

transport_tests! {
#[tokio::test]
async fn a_connection_whose_handler_never_returns_is_dropped_past_the_deadline(t) {
    let hub = StreamHub::new();
    let config = ServerConfig::default().shutdown_timeout(Duration::from_millis(200));
    let server = start_on(t, &hub, std::sync::Arc::new(Stuck), config).await;
    let mut stuck = Vec::new();
    for _ in 0..3 {
        let mut c = RawClient::connect(server.local_addr(), "/", &[])
            .await
            .expect_open();
        c.send_text("hang").await;
        stuck.push(c);
    }
    // And one idle connection, which closes normally.
    let _idle = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    eventually("four registered", || hub.stats().connections == 4).await;
    // The deadline (200 ms) plus the grace (500 ms) pass, then the stuck ones are dropped:
    // the server stops and nothing of them is left in the hub.
    within("the server to stop", server.clone().shutdown_and_wait()).await;
    assert_eq!(server.connections(), 0);
    assert_eq!(hub.connection_count().await, 0);
    for mut c in stuck {
        // Dropped without a close frame: the stream just ends.
        c.wait_eof().await;
    }
}
}
