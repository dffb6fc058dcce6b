//! What the application sees of a connection's end (the disconnect context and its reason)
//! and the secure defaults — same-origin, the inbound rate limit — each attack sent for real
//! over loopback, with a bystander that must not notice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::wire::*;
use futures_util::SinkExt;
use nucleus_stream::server::{RateLimit, ServerConfig};
use nucleus_stream::{
    Disconnect, DisconnectReason, SocketMessage, StreamHandler, StreamHub, WebSocket, async_trait,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// One recorded disconnect: socket id, rooms (sorted), reason, its "who" metadata.
type Gone = (String, Vec<String>, DisconnectReason, Option<String>);

/// Joins every socket to "lobby" and "side", echoes to the lobby, records every disconnect.
#[derive(Default)]
struct Keeper {
    gone: Mutex<Vec<Gone>>,
}

#[async_trait]
impl StreamHandler for Keeper {
    async fn on_connect(&self, hub: &StreamHub, socket: &WebSocket) {
        hub.join_room(&socket.id, "lobby").await.unwrap();
        hub.join_room(&socket.id, "side").await.unwrap();
    }

    async fn on_message(&self, hub: &StreamHub, _socket: &WebSocket, msg: SocketMessage) {
        if msg.as_text() == Some("unregister me") {
            hub.unregister(&_socket.id).await;
            return;
        }
        hub.broadcast_to_room("lobby", msg).await.ok();
    }

    async fn on_disconnect_with(&self, hub: &StreamHub, gone: &Disconnect) {
        assert!(
            !hub.is_registered(&gone.socket.id).await,
            "after unregister"
        );
        let mut rooms: Vec<String> = gone.rooms.iter().map(|r| r.to_string()).collect();
        rooms.sort();
        self.gone.lock().unwrap().push((
            gone.socket.id.to_string(),
            rooms,
            gone.reason,
            gone.socket.metadata("who").map(String::from),
        ));
    }
}

impl Keeper {
    fn reasons(&self) -> Vec<DisconnectReason> {
        self.gone.lock().unwrap().iter().map(|g| g.2).collect()
    }
}

async fn start_keeper(t: Transport, config: ServerConfig) -> (StreamHub, Arc<Keeper>, TestServer) {
    let hub = StreamHub::new();
    let keeper = Arc::new(Keeper::default());
    let server = start_on(t, &hub, keeper.clone(), config).await;
    (hub, keeper, server)
}

async fn wait_gone(keeper: &Keeper, n: usize) -> Vec<DisconnectReason> {
    eventually("disconnects", || keeper.gone.lock().unwrap().len() >= n).await;
    keeper.reasons()
}

transport_tests! {
#[tokio::test]
async fn the_disconnect_context_names_the_socket_its_rooms_and_why_it_ended(t) {
    let config = ServerConfig::default()
        .auth(|req| {
            Ok(nucleus_stream::server::Admission::anonymous()
                .with_metadata("who", req.query_param("who").unwrap_or("?")))
        })
        .idle_timeout(Duration::from_millis(300))
        .ping_interval(Duration::from_secs(60));
    let (hub, keeper, server) = start_keeper(t, config).await;
    let addr = server.local_addr();
    let both = vec!["lobby".to_string(), "side".to_string()];

    // 1. The client closes with its own code.
    let mut ws = ws_connect(addr, "/?who=closer").await;
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4001),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    assert_eq!(
        wait_gone(&keeper, 1).await[0],
        DisconnectReason::ClientClosed { code: Some(4001) }
    );
    {
        let gone = keeper.gone.lock().unwrap();
        assert_eq!(gone[0].1, both, "it was in both rooms");
        assert_eq!(gone[0].3.as_deref(), Some("closer"), "with its metadata");
    }

    // 2. The TCP connection just goes away.
    let raw = RawClient::connect(addr, "/?who=vanisher", &[])
        .await
        .expect_open();
    eventually("registered", || hub.stats().connections == 1).await;
    drop(raw);
    assert_eq!(
        wait_gone(&keeper, 2).await[1],
        DisconnectReason::ConnectionLost
    );

    // 3. A protocol violation (an unmasked client frame): 1002.
    let mut raw = RawClient::connect(addr, "/", &[]).await.expect_open();
    raw.send_raw(&client_frame(true, OP_TEXT, b"x", false))
        .await;
    assert_eq!(raw.read_until_close(|_| {}).await, Some(1002));
    assert_eq!(
        wait_gone(&keeper, 3).await[2],
        DisconnectReason::ProtocolError { code: 1002 }
    );

    // 4. The application unregisters it: the rooms were already left.
    let mut ws = ws_connect(addr, "/").await;
    send_text(&mut ws, "unregister me").await;
    assert_eq!(close_code(&mut ws).await, Some(1000));
    assert_eq!(
        wait_gone(&keeper, 4).await[3],
        DisconnectReason::Unregistered
    );
    assert!(keeper.gone.lock().unwrap()[3].1.is_empty());

    // 5. Silence past the idle timeout.
    let mut raw = RawClient::connect(addr, "/", &[]).await.expect_open();
    assert_eq!(raw.read_until_close(|_| {}).await, Some(1001));
    assert_eq!(
        wait_gone(&keeper, 5).await[4],
        DisconnectReason::IdleTimeout
    );

    // 6. Server shutdown.
    let _ws = ws_connect(addr, "/").await;
    eventually("registered", || hub.stats().connections == 1).await;
    server.shutdown_and_wait().await;
    assert_eq!(
        wait_gone(&keeper, 6).await[5],
        DisconnectReason::ServerShutdown
    );

    // Every close counted by reason.
    let totals = hub.totals();
    for reason in keeper.reasons() {
        assert_eq!(totals.disconnects_for(reason), 1, "{reason}");
    }
    assert_eq!(totals.disconnects.iter().sum::<u64>(), 6);
}
}

transport_tests! {
#[tokio::test]
async fn a_cross_site_page_gets_403_while_same_site_and_non_browser_clients_connect(t) {
    let (hub, _keeper, server) = start_keeper(t, ServerConfig::default()).await;
    let addr = server.local_addr();
    let mut bystander = ws_connect(addr, "/").await;
    eventually("bystander registered", || hub.stats().connections == 1).await;

    // The raw client's Host header is `localhost`.
    for evil in [
        "https://evil.example",
        "http://localhost.evil.example",
        "http://localhost:8080",
        "null",
    ] {
        let status = RawClient::connect(addr, "/", &[("Origin", evil)])
            .await
            .expect_refused();
        assert_eq!(status, 403, "{evil}");
    }
    assert_eq!(hub.connection_count().await, 1, "no attacker registered");
    let same_site = RawClient::connect(addr, "/", &[("Origin", "http://localhost")])
        .await
        .expect_open();
    let no_origin = RawClient::connect(addr, "/", &[]).await.expect_open();
    eventually("both registered", || hub.stats().connections == 3).await;

    // The bystander noticed nothing: still connected, still served.
    hub.broadcast_to_room("lobby", SocketMessage::text("still here"))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut bystander).await.as_deref(),
        Some("still here")
    );
    drop((same_site, no_origin));

    // Explicit any-origin still exists.
    let (_hub, _k, open) = start_keeper(t, ServerConfig::default().any_origin()).await;
    RawClient::connect(
        open.local_addr(),
        "/",
        &[("Origin", "https://evil.example")],
    )
    .await
    .expect_open();
}
}

transport_tests! {
#[tokio::test]
async fn a_flooding_client_gets_error_frames_then_1008_and_the_others_are_undisturbed(t) {
    let limit = RateLimit::per_second(20).burst(10).max_refusals(5);
    let config = ServerConfig::default().inbound_rate(Some(limit));
    let (hub, keeper, server) = start_keeper(t, config).await;
    let addr = server.local_addr();
    let mut bystander = ws_connect(addr, "/").await;
    let mut attacker = RawClient::connect(addr, "/", &[]).await.expect_open();
    eventually("both registered", || hub.stats().connections == 2).await;

    // 200 messages at once: 10 pass (the burst), then refusals, then the close.
    for i in 0..200 {
        attacker.send_text(&format!("flood {i}")).await;
    }
    let mut errors = 0;
    let mut echoes = 0;
    let code = attacker
        .read_until_close(|frame| {
            if frame.opcode == OP_TEXT {
                match std::str::from_utf8(&frame.payload).unwrap() {
                    r#"{"type":"error","error":"rate limit exceeded"}"# => errors += 1,
                    t if t.starts_with("flood ") => echoes += 1,
                    other => panic!("unexpected {other}"),
                }
            }
        })
        .await;
    assert_eq!(code, Some(1008), "closed for policy violation");
    assert!((1..=5).contains(&errors), "{errors} error frames");
    assert!(
        (10..=12).contains(&echoes),
        "{echoes} flood messages got through"
    );
    assert_eq!(wait_gone(&keeper, 1).await, [DisconnectReason::RateLimited]);

    // The bystander got exactly what passed, and keeps sending within the limit.
    let mut seen = 0;
    while seen < echoes {
        let t = next_text(&mut bystander).await.expect("echo");
        assert!(t.starts_with("flood "), "{t}");
        seen += 1;
    }
    for i in 0..5 {
        bystander
            .send(Message::text(format!("calm {i}")))
            .await
            .unwrap();
        assert_eq!(next_text(&mut bystander).await, Some(format!("calm {i}")));
    }
    assert!(
        hub.is_registered(&hub.get_room_members("lobby").await[0])
            .await
    );
    let totals = hub.totals();
    // Five refusals, then the sixth over-limit message closed it; what passed is the rest.
    assert_eq!(totals.rate_limited, 6);
    assert_eq!(totals.messages_in - totals.rate_limited, echoes as u64 + 5);
    assert_eq!(totals.disconnects_for(DisconnectReason::RateLimited), 1);
}
}

transport_tests! {
#[tokio::test]
async fn the_default_limit_leaves_a_brisk_chat_client_alone(t) {
    let (_hub, keeper, server) = start_keeper(t, ServerConfig::default()).await;
    let mut ws = ws_connect(server.local_addr(), "/").await;
    // 40 messages a second for two seconds: a fast typist with typing notices, and more.
    for i in 0..80 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(next_text(&mut ws).await, Some(format!("m{i}")));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(keeper.reasons().is_empty());
}
}
