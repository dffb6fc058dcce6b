//! A small interactive client for the chat example: type lines, see the room.
//!
//! ```text
//! cargo run --release --example chat                 # terminal 1: the server
//! cargo run --example chat_client                    # terminals 2 and 3
//! cargo run --example chat_client -- ws://127.0.0.1:9001
//! ```
//!
//! Commands: `/join ROOM` (and make it the current room), `/leave [ROOM]`, `/raw JSON` (send a
//! frame as typed), `/quit`. Any other line is a message to the current room (`general` at
//! start; join it first).

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_string());
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    println!(
        "connected to {url}. /join ROOM, /leave [ROOM], /raw JSON, /quit; other lines are messages."
    );
    let (mut write, mut read) = ws.split();

    let printer = tokio::spawn(async move {
        while let Some(frame) = read.next().await {
            match frame {
                Ok(Message::Text(text)) => println!("{}", render(&text)),
                Ok(Message::Binary(data)) => println!("<{} bytes of binary>", data.len()),
                Ok(Message::Close(frame)) => {
                    println!("server closed the connection: {frame:?}");
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    println!("connection error: {e}");
                    break;
                }
            }
        }
    });

    let mut room = "general".to_string();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let request = if let Some(r) = line.strip_prefix("/join ") {
            room = r.trim().to_string();
            json!({"action": "join", "room": room}).to_string()
        } else if line == "/leave" {
            json!({"action": "leave", "room": room}).to_string()
        } else if let Some(r) = line.strip_prefix("/leave ") {
            json!({"action": "leave", "room": r.trim()}).to_string()
        } else if let Some(raw) = line.strip_prefix("/raw ") {
            raw.to_string()
        } else if line == "/quit" {
            break;
        } else {
            json!({"action": "message", "room": room, "text": line}).to_string()
        };
        if write.send(Message::text(request)).await.is_err() {
            break;
        }
        if printer.is_finished() {
            break;
        }
    }
    write.send(Message::Close(None)).await.ok();
    printer.await.ok();
    Ok(())
}

/// A human line for a server frame.
fn render(text: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return text.to_string();
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    match v.get("type").and_then(Value::as_str) {
        Some("message") => format!("[{}] {}: {}", s("room"), s("from"), s("text")),
        Some("joined") => format!("[{}] * {} joined", s("room"), s("socket")),
        Some("left") => format!("[{}] * {} left", s("room"), s("socket")),
        Some("error") => format!("! {}", s("error")),
        _ => text.to_string(),
    }
}
