//! Echoes every text and binary message back: the usual target of WebSocket conformance
//! suites (such as Autobahn's fuzzing client). Messages and frames up to 16 MiB.
//!
//! ```text
//! cargo run --release --example echo [ADDR]    # default 127.0.0.1:9002
//! ```

use nucleus_stream::server::{Server, ServerConfig};
use nucleus_stream::{
    QueueConfig, SocketMessage, StreamHandler, StreamHub, WebSocket, async_trait,
};

/// Sends each message back to its sender, unchanged.
pub struct Echo;

#[async_trait]
impl StreamHandler for Echo {
    async fn on_message(&self, hub: &StreamHub, socket: &WebSocket, msg: SocketMessage) {
        // Fails only if the client is already going away.
        hub.send_to(socket.id(), msg).await.ok();
    }
}

/// The echo server's limits: 16 MiB messages and frames, a queue that holds several of them,
/// a larger read buffer for big messages, and no inbound rate limit (conformance suites send
/// thousands of messages back to back).
pub fn config() -> ServerConfig {
    ServerConfig::default()
        .max_size(16 << 20)
        .queue(QueueConfig::default().max_bytes(64 << 20))
        .read_buffer_size(64 * 1024)
        .inbound_rate(None)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".to_string());
    let server = Server::new(StreamHub::new(), Echo)
        .config(config())
        .bind(&addr)
        .await?;
    println!("echo listening on ws://{}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    server.shutdown_and_wait().await;
    Ok(())
}
