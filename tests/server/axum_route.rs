//! What only the axum transport has: WebSockets and plain HTTP routes on one port, an auth
//! hook reading what the app's own middleware put in the request's extensions, and the
//! answers to requests that are not upgrades. (Everything else the server tests pin runs on
//! both transports: see `transport_tests!`.)
#![cfg(feature = "axum")]

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use nucleus_stream::StreamHub;
use nucleus_stream::axum::StreamRoute;
use nucleus_stream::server::{Admission, Rejection, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::wire::*;

/// What the app's session middleware found.
#[derive(Clone)]
struct Session {
    user: String,
}

/// A stand-in for an app's session layer: a `sid` cookie names the user.
async fn session_layer(mut request: Request, next: Next) -> Response {
    let user = request
        .headers()
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sid="))
        .map(str::to_string);
    if let Some(user) = user {
        request.extensions_mut().insert(Session { user });
    }
    next.run(request).await
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

/// One HTTP/1.1 request on a fresh connection; the status and body of the answer.
async fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within("the answer", stream.read_to_end(&mut answer))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, answer)
}

#[tokio::test]
async fn http_routes_and_websockets_share_one_port() {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let ws = StreamRoute::with_shared_handler(hub.clone(), rec.clone(), ServerConfig::default());
    let app = Router::new()
        .route("/", get(|| async { "the page" }))
        .route_service("/ws", ws.clone());
    let addr = serve(app).await;

    let mut client = ws_connect(addr, "/ws").await;
    send_text(&mut client, "over the websocket").await;
    assert_eq!(
        next_text(&mut client).await.as_deref(),
        Some("over the websocket")
    );
    let (status, page) = http(
        addr,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(page.ends_with("the page"), "{page}");
    assert_eq!(ws.connections(), 1);
    assert_eq!(hub.connection_count().await, 1);
}

#[tokio::test]
async fn the_auth_hook_sees_the_extensions_set_by_the_apps_middleware() {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, false);
    let config = ServerConfig::default().auth(|req| match req.extensions().get::<Session>() {
        Some(session) => Ok(Admission::user(session.user.clone())
            .with_metadata("peer_known", req.peer_addr().is_some().to_string())),
        None => Err(Rejection::unauthorized().with_body("log in first")),
    });
    let ws = StreamRoute::with_shared_handler(hub.clone(), rec.clone(), config);
    let app = Router::new()
        .route_service("/ws", ws)
        .layer(middleware::from_fn(session_layer));
    let addr = serve(app).await;

    match RawClient::connect(addr, "/ws", &[]).await {
        Upgrade::Refused(status, body) => {
            assert_eq!(status, 401);
            assert!(body.contains("log in first"), "{body}");
        }
        Upgrade::Open(_) => panic!("admitted without a session"),
    }
    let _alice = RawClient::connect(addr, "/ws", &[("Cookie", "sid=alice")])
        .await
        .expect_open();
    eventually("alice's on_connect", || rec.connected_ids().len() == 1).await;
    assert!(hub.is_user_online("alice").await);
    let Some(Seen::Connect { user, metadata, .. }) = rec.seen().into_iter().next() else {
        panic!("no connect")
    };
    assert_eq!(user.as_deref(), Some("alice"));
    assert_eq!(metadata, [("peer_known".to_string(), "true".to_string())]);
}

#[tokio::test]
async fn requests_that_are_not_upgrades_get_405_or_426_and_the_route_stays_usable() {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let ws = StreamRoute::with_shared_handler(hub.clone(), rec.clone(), ServerConfig::default());
    let addr = serve(Router::new().route_service("/ws", ws)).await;

    let (status, _) = http(
        addr,
        "POST /ws HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405);
    let (status, answer) = http(addr, "GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(status, 426);
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{answer}"
    );
    assert!(rec.seen().is_empty());
    let mut client = ws_connect(addr, "/ws").await;
    send_text(&mut client, "still fine").await;
    assert_eq!(next_text(&mut client).await.as_deref(), Some("still fine"));
}

#[tokio::test]
async fn a_route_sharing_the_bundled_servers_service_shares_its_shutdown() {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, false);
    let server = start(&hub, rec.clone(), ServerConfig::default()).await;
    let ws = StreamRoute::from_service(server.service().clone());
    let addr = serve(Router::new().route_service("/ws", ws.clone())).await;

    let mut behind_axum = RawClient::connect(addr, "/ws", &[]).await.expect_open();
    let mut bundled = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    eventually("both connected", || rec.connected_ids().len() == 2).await;
    assert_eq!(ws.connections(), 2, "one service, one count");

    server.shutdown();
    assert_eq!(behind_axum.read_until_close(|_| {}).await, Some(1001));
    assert_eq!(bundled.read_until_close(|_| {}).await, Some(1001));
    drop((behind_axum, bundled)); // instead of answering the close
    within("the route to stop", ws.stopped()).await;
    within("the server to stop", server.stopped()).await;
    assert_eq!(rec.disconnects().len(), 2);
    // New upgrades behind axum are refused while (and after) the service shuts down.
    assert_eq!(
        RawClient::connect(addr, "/ws", &[]).await.expect_refused(),
        503
    );
}
