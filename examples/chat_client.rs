//! A small interactive client for the chat example: type lines, see the room.
//!
//! ```text
//! cargo run --release --example chat                 # terminal 1: the server
//! cargo run --example chat_client                    # terminals 2 and 3
//! cargo run --example chat_client -- ws://127.0.0.1:9001
//! ```
//!
//! Commands: `/join ROOM` (and make it the current room), `/leave [ROOM]`, `/who` (who is in the current room), `/raw JSON` (send a
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
        "connected to {url}. /join ROOM, /leave [ROOM], /who, /raw JSON, /quit; other lines are messages."
    );
    let (mut write, mut read) = ws.split();

    let mut printer = tokio::spawn(async move {
        while let Some(frame) = read.next().await {
            match frame {
                Ok(Message::Text(text)) => println!("{}", render(&text)),
                Ok(Message::Binary(data)) => println!("<{} bytes of binary>", data.len()),
                Ok(Message::Close(frame)) => {
                    match frame {
                        Some(f) => println!(
                            "server closed the connection: {} {}",
                            u16::from(f.code),
                            f.reason
                        ),
                        None => println!("server closed the connection"),
                    }
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
    loop {
        let line = tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) => line,
                None => break, // end of input
            },
            _ = &mut printer => return Ok(()), // the server ended the connection
        };
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
        } else if line == "/who" {
            json!({"action": "presence", "room": room}).to_string()
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
        Some("joined") => format!("[{}] * you joined (as {})", s("room"), s("socket")),
        Some("left") => format!("[{}] * you left", s("room")),
        Some("presence_diff") => {
            let list = |k: &str| -> String {
                let names: Vec<&str> = v
                    .get(k)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                names.join(", ")
            };
            let (joins, leaves) = (list("joins"), list("leaves"));
            let mut line = format!("[{}] *", s("room"));
            if !joins.is_empty() {
                line += &format!(" joined: {joins}");
            }
            if !leaves.is_empty() {
                line += &format!(" left: {leaves}");
            }
            line
        }
        Some("presence_state") => {
            let members: Vec<&str> = v
                .get("members")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!("[{}] * here: {}", s("room"), members.join(", "))
        }
        Some("error") => format!("! {}", s("error")),
        _ => text.to_string(),
    }
}
