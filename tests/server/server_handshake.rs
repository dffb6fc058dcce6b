//! The upgrade: Origin allow-list, the auth hook, the connection limit and the handshake
//! timeout, each over a real loopback socket.

use std::time::Duration;

use crate::support::wire::*;
use nucleus_stream::StreamHub;
use nucleus_stream::server::{Admission, Rejection, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

transport_tests! {
#[tokio::test]
async fn disallowed_origin_gets_403_before_the_upgrade(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, false);
    let config = ServerConfig::default().allowed_origins(["https://good.example"]);
    let server = start_on(t, &hub, rec.clone(), config).await;
    let addr = server.local_addr();

    let status = RawClient::connect(addr, "/", &[("Origin", "https://evil.example")])
        .await
        .expect_refused();
    assert_eq!(status, 403);
    // Allowed Origin (case-insensitive) and no Origin at all (non-browser) both open.
    let ok = RawClient::connect(addr, "/", &[("Origin", "https://GOOD.example")])
        .await
        .expect_open();
    let no_origin = RawClient::connect(addr, "/", &[]).await.expect_open();
    eventually("two connects", || rec.connected_ids().len() == 2).await;
    assert_eq!(
        hub.connection_count().await,
        2,
        "the refused one never registered"
    );
    drop((ok, no_origin));
}
}

transport_tests! {
#[tokio::test]
async fn auth_hook_rejects_with_its_status_and_admits_users_with_metadata(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, false);
    let config = ServerConfig::default().auth(|req| {
        match (
            req.path(),
            req.query_param("token"),
            req.header("x-api-key"),
        ) {
            (_, _, Some("banned")) => Err(Rejection::new(429).with_body("slow down")),
            ("/chat", Some("alice-token"), _) => Ok(Admission::user("alice")
                .with_metadata("plan", "pro")
                .with_metadata(
                    "peer_is_loopback",
                    req.peer_addr()
                        .is_some_and(|p| p.ip().is_loopback())
                        .to_string(),
                )),
            ("/chat", None, _) => Ok(Admission::anonymous()),
            _ => Err(Rejection::unauthorized()),
        }
    });
    let server = start_on(t, &hub, rec.clone(), config).await;
    let addr = server.local_addr();

    assert_eq!(
        RawClient::connect(addr, "/chat?token=wrong", &[])
            .await
            .expect_refused(),
        401
    );
    assert_eq!(
        RawClient::connect(addr, "/other", &[])
            .await
            .expect_refused(),
        401
    );
    match RawClient::connect(addr, "/chat", &[("X-Api-Key", "banned")]).await {
        Upgrade::Refused(status, body) => {
            assert_eq!(status, 429);
            assert!(body.contains("slow down"), "body: {body:?}");
        }
        Upgrade::Open(_) => panic!("banned key admitted"),
    }
    assert_eq!(hub.connection_count().await, 0);

    let mut alice = ws_connect(addr, "/chat?token=alice-token").await;
    let anon = ws_connect(addr, "/chat").await;
    eventually("two connects", || rec.connected_ids().len() == 2).await;
    assert!(hub.is_user_online("alice").await);
    assert_eq!(hub.online_user_count().await, 1);
    let alice_connect = rec
        .seen()
        .into_iter()
        .find(|s| matches!(s, Seen::Connect { user: Some(u), .. } if u == "alice"))
        .expect("alice's on_connect");
    let Seen::Connect { metadata, .. } = alice_connect else {
        unreachable!()
    };
    assert_eq!(
        metadata,
        vec![
            ("plan".to_string(), "pro".to_string()),
            ("peer_is_loopback".to_string(), "true".to_string())
        ]
    );
    // The hub reaches alice by user id.
    let report = hub
        .send_to_user("alice", nucleus_stream::SocketMessage::text("hi alice"))
        .await
        .unwrap();
    assert_eq!(report.queued, 1);
    assert_eq!(next_text(&mut alice).await.as_deref(), Some("hi alice"));
    drop(alice);
    eventually("alice offline", || hub.stats().online_users == 0).await;
    drop(anon);
}
}

transport_tests! {
#[tokio::test]
async fn connections_past_the_limit_get_503(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let server = start_on(
        t,
        &hub,
        rec.clone(),
        ServerConfig::default().max_connections(2),
    )
    .await;
    let addr = server.local_addr();

    let mut a = ws_connect(addr, "/").await;
    let b = ws_connect(addr, "/").await;
    assert_eq!(
        RawClient::connect(addr, "/", &[]).await.expect_refused(),
        503
    );
    assert_eq!(
        RawClient::connect(addr, "/", &[]).await.expect_refused(),
        503
    );
    // The refusals disturbed nobody.
    send_text(&mut a, "a").await;
    assert_eq!(next_text(&mut a).await.as_deref(), Some("a"));
    assert_eq!(hub.connection_count().await, 2);

    // When one leaves, a newcomer fits again.
    drop(b);
    eventually("b to be gone", || server.connections() == 1).await;
    let mut c = ws_connect(addr, "/").await;
    send_text(&mut c, "c").await;
    assert_eq!(next_text(&mut c).await.as_deref(), Some("c"));
}
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_dropped_at_the_timeout() {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let config = ServerConfig::default()
        .handshake_timeout(Duration::from_millis(200))
        .max_connections(3);
    let server = start(&hub, rec.clone(), config).await;
    let addr = server.local_addr();

    // Half a request, then silence; and a connection that sends nothing at all.
    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let mut mute = tokio::net::TcpStream::connect(addr).await.unwrap();
    eventually("both counted", || server.connections() == 2).await;

    let mut buf = Vec::new();
    within(
        "the server to drop the half handshake",
        half.read_to_end(&mut buf),
    )
    .await
    .ok();
    assert!(buf.is_empty(), "no upgrade response was sent: {buf:?}");
    within(
        "the server to drop the mute client",
        mute.read_to_end(&mut buf),
    )
    .await
    .ok();
    eventually("both released", || server.connections() == 0).await;
    assert!(rec.seen().is_empty(), "neither was ever registered");

    // Their slots are free again.
    let mut ok = ws_connect(addr, "/").await;
    send_text(&mut ok, "fine").await;
    assert_eq!(next_text(&mut ok).await.as_deref(), Some("fine"));
}
