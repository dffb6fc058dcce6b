//! The chat example's handler over real loopback WebSockets: delivery to every member
//! (sender included), announcements, and an error frame — to the offender only, with the
//! connection left open — for every kind of bad input.

use crate::chat;

use std::net::SocketAddr;

use crate::support::wire::*;
use futures_util::SinkExt;
use nucleus_stream::StreamHub;
use nucleus_stream::server::{Server, ServerConfig, ServerHandle};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn start_chat(config: ServerConfig) -> (StreamHub, ServerHandle) {
    let hub = StreamHub::new();
    let server = Server::new(hub.clone(), chat::ChatHandler::default())
        .config(config)
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    (hub, server)
}

/// A chat client that knows its socket id (learned from its own join announcement).
struct Client {
    ws: WsClient,
    id: String,
}

impl Client {
    async fn send(&mut self, v: Value) {
        send_text(&mut self.ws, &v.to_string()).await;
    }

    async fn recv(&mut self) -> Value {
        let text = next_text(&mut self.ws).await.expect("a frame");
        serde_json::from_str(&text).expect("server frames are JSON")
    }

    async fn recv_raw(&mut self) -> String {
        next_text(&mut self.ws).await.expect("a frame")
    }

    /// Joins `room` and returns the announcement it sees of its own join.
    async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"action": "join", "room": room})).await;
        self.recv().await
    }
}

/// Connects and joins `room`, learning the client's id from the announcement.
async fn join_new(addr: SocketAddr, room: &str) -> Client {
    let mut c = Client {
        ws: ws_connect(addr, "/").await,
        id: String::new(),
    };
    let joined = c.join(room).await;
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["room"], room);
    c.id = joined["socket"].as_str().expect("socket id").to_string();
    c
}

fn joined(room: &str, id: &str) -> Value {
    json!({"type": "joined", "room": room, "socket": id})
}

fn left(room: &str, id: &str) -> Value {
    json!({"type": "left", "room": room, "socket": id})
}

fn message(room: &str, from: &str, text: &str) -> Value {
    json!({"type": "message", "room": room, "from": from, "text": text})
}

#[tokio::test]
async fn messages_reach_every_member_with_the_text_verbatim() {
    let (_hub, server) = start_chat(ServerConfig::default()).await;
    let addr = server.local_addr();
    let mut a = join_new(addr, "r").await;
    let mut b = join_new(addr, "r").await;
    assert_eq!(a.recv().await, joined("r", &b.id), "a sees b join");
    let mut c = join_new(addr, "elsewhere").await;

    let tricky = "quote \" backslash \\ newline \n tab \t unicode é 😀 </script> {\"json\":1}";
    a.send(json!({"action": "message", "room": "r", "text": tricky}))
        .await;
    // Sender included; the exact bytes are serde_json's serialization of the envelope.
    let expected = serde_json::to_string(&chat::ChatEvent::Message {
        room: "r",
        from: &a.id,
        text: tricky,
        at: None,
    })
    .unwrap();
    assert_eq!(a.recv_raw().await, expected);
    assert_eq!(b.recv_raw().await, expected);
    let parsed: Value = serde_json::from_str(&expected).unwrap();
    assert_eq!(parsed, message("r", &a.id, tricky));

    // c is not in r: the next thing c sees is its own message in its own room.
    c.send(json!({"action": "message", "room": "elsewhere", "text": "hi"}))
        .await;
    assert_eq!(c.recv().await, message("elsewhere", &c.id, "hi"));
}

#[tokio::test]
async fn joins_and_leaves_are_announced_and_rejoining_is_silent() {
    let (hub, server) = start_chat(ServerConfig::default()).await;
    let addr = server.local_addr();
    let mut a = join_new(addr, "r").await;
    let mut b = join_new(addr, "r").await;
    assert_eq!(a.recv().await, joined("r", &b.id));

    // Joining again: no announcement, no error.
    b.send(json!({"action": "join", "room": "r"})).await;
    b.send(json!({"action": "message", "room": "r", "text": "after rejoin"}))
        .await;
    assert_eq!(b.recv().await, message("r", &b.id, "after rejoin"));
    assert_eq!(a.recv().await, message("r", &b.id, "after rejoin"));

    // Leaving: announced to the room, leaver included, before the leave.
    b.send(json!({"action": "leave", "room": "r"})).await;
    assert_eq!(b.recv().await, left("r", &b.id));
    assert_eq!(a.recv().await, left("r", &b.id));
    assert_eq!(hub.get_room_members("r").await, vec![a.id.clone()]);

    // b no longer receives r's messages.
    a.send(json!({"action": "message", "room": "r", "text": "b is gone"}))
        .await;
    assert_eq!(a.recv().await, message("r", &a.id, "b is gone"));
    b.send(json!({"action": "join", "room": "s"})).await;
    assert_eq!(
        b.recv().await,
        joined("s", &b.id),
        "nothing from r came first"
    );
}

#[tokio::test]
async fn every_bad_input_gets_an_error_frame_to_the_sender_only_and_the_connection_stays_open() {
    let (_hub, server) = start_chat(ServerConfig::default()).await;
    let addr = server.local_addr();
    let mut bad = join_new(addr, "r").await;
    let mut witness = join_new(addr, "r").await;
    assert_eq!(bad.recv().await, joined("r", &witness.id));

    let long_room = "x".repeat(1000);
    let cases: Vec<(&str, String)> = vec![
        ("malformed JSON", "{\"action\": \"join\", ".to_string()),
        ("not JSON at all", "hello".to_string()),
        ("not an object", "[1,2,3]".to_string()),
        (
            "unknown action",
            json!({"action": "dance", "room": "r"}).to_string(),
        ),
        ("missing action", json!({"room": "r"}).to_string()),
        ("join without room", json!({"action": "join"}).to_string()),
        ("leave without room", json!({"action": "leave"}).to_string()),
        (
            "message without room",
            json!({"action": "message", "text": "t"}).to_string(),
        ),
        (
            "message without text",
            json!({"action": "message", "room": "r"}).to_string(),
        ),
        (
            "text of the wrong type",
            json!({"action": "message", "room": "r", "text": 5}).to_string(),
        ),
        (
            "room of the wrong type",
            json!({"action": "join", "room": null}).to_string(),
        ),
        (
            "empty room name",
            json!({"action": "join", "room": ""}).to_string(),
        ),
        (
            "room name too long",
            json!({"action": "join", "room": long_room}).to_string(),
        ),
        (
            "message to a room not joined",
            json!({"action": "message", "room": "other", "text": "t"}).to_string(),
        ),
        (
            "leave a room not joined",
            json!({"action": "leave", "room": "other"}).to_string(),
        ),
    ];
    for (what, frame) in &cases {
        send_text(&mut bad.ws, frame).await;
        let reply = bad.recv().await;
        assert_eq!(reply["type"], "error", "{what}: {reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{what}: the error says what went wrong");
        assert_eq!(
            reply.as_object().map(|o| o.len()),
            Some(2),
            "{what}: only type and error"
        );
    }
    // A binary frame, too.
    bad.ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(bad.recv().await["type"], "error");

    // Still open and still in the room; the witness saw none of it.
    bad.send(json!({"action": "message", "room": "r", "text": "still here"}))
        .await;
    assert_eq!(bad.recv().await, message("r", &bad.id, "still here"));
    assert_eq!(witness.recv().await, message("r", &bad.id, "still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_300_clients_each_receives_every_message() {
    const CLIENTS: usize = 300;
    const SENDERS: usize = 5;
    const PER_SENDER: usize = 10;
    let (hub, server) = start_chat(ServerConfig::default()).await;
    let addr = server.local_addr();

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(join_new(addr, "big").await);
    }
    assert_eq!(hub.get_room("big").await.unwrap().size(), CLIENTS);
    let ids: Vec<String> = clients.iter().map(|c| c.id.clone()).collect();

    // Each client first drains the announcements of everyone who joined after it, then
    // collects messages until it has all of them.
    let mut tasks = Vec::new();
    for (i, mut c) in clients.drain(..).enumerate() {
        let later: Vec<String> = ids[i + 1..].to_vec();
        tasks.push(tokio::spawn(async move {
            for id in &later {
                assert_eq!(c.recv().await, joined("big", id));
            }
            let mut got = Vec::new();
            if i < SENDERS {
                for k in 0..PER_SENDER {
                    c.send(json!({"action": "message", "room": "big", "text": format!("{i}:{k}")}))
                        .await;
                }
            }
            while got.len() < SENDERS * PER_SENDER {
                let v = c.recv().await;
                assert_eq!(v["type"], "message", "{v}");
                got.push(v["text"].as_str().unwrap().to_string());
            }
            got
        }));
    }
    for t in tasks {
        let got = t.await.unwrap();
        // Every message arrived once, and each sender's messages in the order sent.
        for s in 0..SENDERS {
            let from_s: Vec<&String> = got
                .iter()
                .filter(|t| t.starts_with(&format!("{s}:")))
                .collect();
            let expected: Vec<String> = (0..PER_SENDER).map(|k| format!("{s}:{k}")).collect();
            assert_eq!(from_s, expected.iter().collect::<Vec<_>>());
        }
    }
}

#[tokio::test]
async fn a_disconnect_is_announced_as_left_in_every_room_the_client_was_in() {
    let (hub, server) = start_chat(ServerConfig::default()).await;
    let addr = server.local_addr();
    let mut a = join_new(addr, "r").await;
    let mut gone = join_new(addr, "r").await;
    assert_eq!(a.recv().await, joined("r", &gone.id));
    assert_eq!(gone.join("s").await, joined("s", &gone.id));
    let mut b = join_new(addr, "s").await;
    assert_eq!(gone.recv().await, joined("s", &b.id));

    let gone_id = gone.id.clone();
    drop(gone); // the TCP connection goes away without a closing handshake
    assert_eq!(a.recv().await, left("r", &gone_id));
    assert_eq!(b.recv().await, left("s", &gone_id));
    assert_eq!(hub.get_room_members("r").await, vec![a.id.clone()]);
    assert_eq!(hub.get_room_members("s").await, vec![b.id.clone()]);

    // Announced once: the next thing b sees is its own message.
    b.send(json!({"action": "message", "room": "s", "text": "still here"}))
        .await;
    assert_eq!(b.recv().await, message("s", &b.id, "still here"));
}
