//! The chat example's protocol inside an axum app: the WebSocket at `/ws` and a plain HTML
//! page at `/`, on one port.
//!
//! ```text
//! cargo run --release --example axum_chat --features axum -- 127.0.0.1:9003
//! ```
//!
//! then open <http://127.0.0.1:9003/> in two browser tabs, or connect any client to
//! `ws://127.0.0.1:9003/ws` (`cargo run --example chat_client -- ws://127.0.0.1:9003/ws`).
//! The protocol (frames, errors, announcements) is the chat example's: its handler is
//! shared, not copied (`examples/chat.rs`, included below). `ws://ADDR/ws?user=NAME`
//! connects as user `NAME` (1–64 of `A-Z a-z 0-9 _ -`, else 400; the chat example's
//! `user_from_query`), and `{"action":"online"}` lists who is online: a demo of the auth hook,
//! which behind axum also sees what the app's own middleware put in the request's
//! extensions — a real app would read its session there instead of trusting the URL.
//!
//! Ctrl-C stops axum from accepting, sends every WebSocket 1001 after its backlog, and
//! exits once every connection has run its `on_disconnect`.

#[allow(dead_code)]
#[path = "chat.rs"]
mod chat;

use std::net::SocketAddr;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use axum::serve::ListenerExt;
use nucleus_stream::StreamHub;
use nucleus_stream::axum::StreamRoute;
use nucleus_stream::server::ServerConfig;

/// The app: the page at `/`, the chat at `/ws`. The route is returned too, for the shutdown.
pub fn app(hub: &StreamHub, config: ServerConfig) -> (Router, StreamRoute) {
    // The chat's presence broadcaster (batched diffs), as the plain server runs it.
    let (feed, _task) = chat::spawn_presence(hub, std::time::Duration::from_millis(200));
    let ws = StreamRoute::new(
        hub.clone(),
        chat::ChatHandler::new(feed),
        config.auth(chat::user_from_query),
    );
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route_service("/ws", ws.clone());
    (app, ws)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9003".to_string());
    let hub = StreamHub::new();
    let (app, ws) = app(&hub, ServerConfig::default().max_connections(100_000));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "axum_chat: page at http://{0}/, WebSocket at ws://{0}/ws",
        listener.local_addr()?
    );
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(ws.shutdown_on(ctrl_c))
    .await?;
    println!("shutting down ({} WebSocket connections)", ws.connections());
    ws.stopped().await;
    Ok(())
}

/// A page that speaks the chat protocol: pick a name and a room, then talk.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>nucleus-stream chat</title>
<style>body{font:15px system-ui;margin:2em;max-width:40em}#log{border:1px solid #ccc;height:20em;overflow:auto;padding:.5em;white-space:pre-wrap}</style>
<h1>chat</h1>
<p><input id="user" placeholder="your name" value="guest"> <input id="room" value="lobby">
<button id="connect">connect</button></p>
<div id="log"></div>
<p><input id="text" size="40" placeholder="message" disabled> <button id="send" disabled>send</button></p>
<script>
const $ = (id) => document.getElementById(id);
const log = (line) => { $("log").textContent += line + "\n"; $("log").scrollTop = 1e9; };
let ws;
$("connect").onclick = () => {
  if (ws) ws.close();
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("user", $("user").value);
  ws = new WebSocket(url);
  ws.onopen = () => {
    ws.send(JSON.stringify({action: "join", room: $("room").value}));
    $("text").disabled = $("send").disabled = false;
    log("connected as " + $("user").value);
  };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "message") log(`[${m.room}] ${m.from}: ${m.text}`);
    else if (m.type === "error") log("error: " + m.error);
    else log(JSON.stringify(m));
  };
  ws.onclose = (e) => { log(`closed (${e.code})`); $("text").disabled = $("send").disabled = true; };
};
$("send").onclick = () => {
  ws.send(JSON.stringify({action: "message", room: $("room").value, text: $("text").value}));
  $("text").value = "";
};
$("text").onkeydown = (e) => { if (e.key === "Enter") $("send").onclick(); };
</script>
"#;
