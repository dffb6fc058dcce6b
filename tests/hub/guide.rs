//! Every snippet of the crate's user guide, `docs/guide.md`, run against the crate. Each
//! follows the guide; the guide's "Differences from the original guide" (also in the README)
//! lists how they differ from the original Nucleus guide (crate path, `register` returning
//! `Result`, `Binary` holding `Bytes`, no `unwrap` of client input), and each test then
//! checks that the snippet did what the guide says.

use crate::support::{block_on, drain_texts, socket, user_socket};
use nucleus_stream::{
    SocketMessage, StreamError, StreamHandler, StreamHub, WebSocket, async_trait,
};
use serde::{Deserialize, Serialize};

#[test]
fn quick_start() {
    block_on(async {
        let hub = StreamHub::new();
        let (socket, mut rx) = socket("s1");
        let (target, mut target_rx) = crate::support::socket("s2");
        hub.register(target.clone()).await?;
        let target_socket_id = target.id.clone();

        // --- guide: Quick Start ---
        // On client connect
        hub.register(socket.clone()).await?;
        // Join a chat room
        hub.join_room(&socket.id, "general").await?;
        // Broadcast message to room
        hub.broadcast_to_room("general", SocketMessage::text("Hello everyone!"))
            .await?;
        // Send private message
        hub.send_to(&target_socket_id, SocketMessage::text("Private message"))
            .await?;
        // On disconnect
        hub.unregister(&socket.id).await;
        // --- end ---

        assert_eq!(drain_texts(&mut rx), ["Hello everyone!"]);
        assert_eq!(drain_texts(&mut target_rx), ["Private message"]);
        assert!(hub.list_rooms().await.is_empty());
        assert_eq!(hub.connection_count().await, 1);
        Ok::<(), StreamError>(())
    })
    .unwrap();
}

#[test]
fn hub_is_clone_and_clones_share_state() {
    block_on(async {
        // --- guide: StreamHub ---
        let hub = StreamHub::new();
        // Hub is Clone - share across handlers
        let hub_clone = hub.clone(); // Same underlying state
        // --- end ---
        let (s, _rx) = socket("a");
        hub_clone.register(s).await.unwrap();
        assert_eq!(hub.connection_count().await, 1);
    });
}

#[test]
fn websocket_handle() {
    let (sender, _rx) = nucleus_stream::channel(nucleus_stream::QueueConfig::default());
    let id = "conn-7".to_string();
    let sender2 = sender.clone();
    let sender3 = sender.clone();

    // --- guide: WebSocket Handle ---
    // Anonymous socket
    let socket = WebSocket::new(id, sender);
    // Authenticated socket
    let authed = WebSocket::authenticated("conn-8", "user_123".to_string(), sender2);
    // With metadata
    let socket = socket.with_metadata("ip", "192.168.1.1");
    // --- end ---

    assert_eq!(&*socket.id, "conn-7");
    assert_eq!(socket.user_id(), None);
    assert_eq!(socket.metadata("ip"), Some("192.168.1.1"));
    assert_eq!(authed.user_id(), Some("user_123"));
    assert!(socket.sender().same_channel(&sender3));
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct MyData {
    value: i32,
}

#[test]
fn messages() -> Result<(), StreamError> {
    // --- guide: Messages ---
    // Text message
    let msg = SocketMessage::text("Hello");
    assert_eq!(msg.as_text(), Some("Hello"));
    // JSON message
    let msg = SocketMessage::json(&MyData { value: 42 })?;
    let message = msg.clone();
    // Binary data (deviation: `Binary` holds `Bytes`; `.into()` takes the Vec without copying)
    let msg = SocketMessage::Binary(vec![0, 1, 2, 3].into());
    // Parse JSON from message
    let data: MyData = message.as_json()?;
    // --- end ---
    assert_eq!(data, MyData { value: 42 });
    assert_eq!(msg.payload(), &[0, 1, 2, 3]);
    Ok(())
}

#[test]
fn join_leave_and_unregister() {
    block_on(async {
        let hub = StreamHub::new();
        let (socket, _rx) = socket("s1");
        hub.register(socket.clone()).await?;

        // --- guide: Join/Leave ---
        // Join a room (creates if doesn't exist)
        hub.join_room(&socket.id, "room_name").await?;
        assert_eq!(hub.list_rooms().await, ["room_name"]);
        // Leave a room
        hub.leave_room(&socket.id, "room_name").await?;
        assert!(hub.list_rooms().await.is_empty());
        hub.join_room(&socket.id, "room_name").await?;
        hub.join_room(&socket.id, "other").await?;
        // Unregister leaves all rooms automatically
        hub.unregister(&socket.id).await;
        // --- end ---
        assert!(hub.list_rooms().await.is_empty());
        Ok::<(), StreamError>(())
    })
    .unwrap();
}

#[test]
fn room_information() {
    block_on(async {
        let hub = StreamHub::new();
        let (socket, _rx) = socket("s1");
        let (other, _rx2) = crate::support::socket("s2");
        hub.register(socket.clone()).await?;
        hub.register(other.clone()).await?;
        hub.join_room(&socket.id, "room_name").await?;
        hub.join_room(&other.id, "room_name").await?;
        hub.join_room(&socket.id, "second").await?;
        let mut printed = None;

        // --- guide: Room Information ---
        // Get room members
        let members = hub.get_room_members("room_name").await;
        // Get rooms a socket is in
        let rooms = hub.get_socket_rooms(&socket.id).await;
        // List all rooms
        let all_rooms = hub.list_rooms().await;
        // Get room details
        if let Some(room) = hub.get_room("room_name").await {
            println!("Members: {}", room.size());
            printed = Some(room.size());
        }
        // --- end ---

        assert_eq!(crate::support::sorted(members), ["s1", "s2"]);
        assert_eq!(crate::support::sorted(rooms), ["room_name", "second"]);
        assert_eq!(crate::support::sorted(all_rooms), ["room_name", "second"]);
        assert_eq!(printed, Some(2));
        Ok::<(), StreamError>(())
    })
    .unwrap();
}

#[test]
fn messaging() {
    block_on(async {
        let hub = StreamHub::new();
        let (a, mut a_rx) = user_socket("a", "user_123");
        let (b, mut b_rx) = user_socket("b", "user_123");
        let (c, mut c_rx) = socket("c");
        for s in [&a, &b, &c] {
            hub.register(s.clone()).await?;
            hub.join_room(&s.id, "room").await?;
        }
        let socket_id = c.id.clone();
        let sender_id = a.id.clone();
        let msg = SocketMessage::text("except");

        // --- guide: Direct Messages ---
        // Send to specific socket
        hub.send_to(&socket_id, SocketMessage::text("Hello"))
            .await?;
        // --- guide: Room Broadcast ---
        // To all in room
        hub.broadcast_to_room("room", SocketMessage::text("Hello"))
            .await?;
        // To all except sender
        hub.broadcast_to_room_except("room", msg, &sender_id)
            .await?;
        // --- guide: Global Broadcast ---
        // To all connected sockets
        let sent = hub
            .broadcast_all(SocketMessage::text("Server message"))
            .await;
        println!("Sent to {} clients", sent);
        // --- guide: User Messaging ---
        // Send to all sockets of a user (multi-device)
        hub.send_to_user("user_123", SocketMessage::text("Notification"))
            .await?;
        // --- end ---

        assert_eq!(sent, 3);
        assert_eq!(
            drain_texts(&mut a_rx),
            ["Hello", "Server message", "Notification"]
        );
        assert_eq!(
            drain_texts(&mut b_rx),
            ["Hello", "except", "Server message", "Notification"]
        );
        assert_eq!(
            drain_texts(&mut c_rx),
            ["Hello", "Hello", "except", "Server message"]
        );
        Ok::<(), StreamError>(())
    })
    .unwrap();
}

#[test]
fn presence_tracking() {
    block_on(async {
        let hub = StreamHub::new();
        let (phone, _r1) = user_socket("phone", "user_123");
        let (laptop, _r2) = user_socket("laptop", "user_123");
        let (other, _r3) = user_socket("x", "user_456");
        let (anon, _r4) = socket("anon");
        for s in [phone, laptop, other, anon] {
            hub.register(s).await?;
        }
        let mut said_connected = false;

        // --- guide: Presence Tracking ---
        // Check if user is online
        if hub.is_user_online("user_123").await {
            println!("User is connected");
            said_connected = true;
        }
        // Get all online users
        let online = hub.online_users().await;
        println!("{} users online", online.len());
        // Get connection counts
        let total = hub.connection_count().await;
        let users = hub.online_user_count().await;
        // --- end ---

        assert!(said_connected);
        assert_eq!(crate::support::sorted(online), ["user_123", "user_456"]);
        assert_eq!(total, 4);
        assert_eq!(users, 2);
        Ok::<(), StreamError>(())
    })
    .unwrap();
}

// --- guide: Implementing a Handler ---
struct ChatHandler;

#[async_trait]
impl StreamHandler for ChatHandler {
    async fn on_connect(&self, hub: &StreamHub, socket: &WebSocket) {
        println!("Connected: {}", socket.id);
        hub.join_room(&socket.id, "lobby").await.ok();
    }

    async fn on_message(&self, hub: &StreamHub, socket: &WebSocket, msg: SocketMessage) {
        if let SocketMessage::Text(text) = msg {
            // Echo to room
            hub.broadcast_to_room_except("lobby", SocketMessage::text(&text), &socket.id)
                .await
                .ok();
        }
    }

    async fn on_disconnect(&self, hub: &StreamHub, socket_id: &str) {
        println!("Disconnected: {}", socket_id);
        let _ = hub;
    }
}
// --- end ---

#[test]
fn implementing_a_handler() {
    block_on(async {
        let hub = StreamHub::new();
        let handler = ChatHandler;
        let (a, mut a_rx) = socket("a");
        let (b, mut b_rx) = socket("b");
        for s in [&a, &b] {
            hub.register(s.clone()).await.unwrap();
            handler.on_connect(&hub, s).await;
        }
        handler
            .on_message(&hub, &a, SocketMessage::text("hi lobby"))
            .await;
        handler
            .on_message(&hub, &a, SocketMessage::Binary(vec![1].into()))
            .await;
        hub.unregister(&a.id).await;
        handler.on_disconnect(&hub, &a.id).await;
        assert!(drain_texts(&mut a_rx).is_empty());
        assert_eq!(drain_texts(&mut b_rx), ["hi lobby"]);
        assert_eq!(hub.get_room_members("lobby").await, ["b"]);
    });
}

// --- guide: Chat Room Example ---
struct ChatRoom {
    hub: StreamHub,
}

impl ChatRoom {
    async fn handle_message(&self, socket: &WebSocket, text: &str) {
        #[derive(Deserialize)]
        struct ChatMessage {
            action: String,
            room: Option<String>,
            text: Option<String>,
        }

        // Client input: never unwrap it (a bad frame must not panic the server).
        let Ok(msg) = serde_json::from_str::<ChatMessage>(text) else {
            return;
        };

        match msg.action.as_str() {
            "join" => {
                let Some(room) = msg.room else { return };
                self.hub.join_room(&socket.id, &room).await.ok();
                self.hub
                    .broadcast_to_room(&room, SocketMessage::text("User joined"))
                    .await
                    .ok();
            }
            "leave" => {
                let Some(room) = msg.room else { return };
                self.hub
                    .broadcast_to_room(&room, SocketMessage::text("User left"))
                    .await
                    .ok();
                self.hub.leave_room(&socket.id, &room).await.ok();
            }
            "message" => {
                let (Some(room), Some(text)) = (msg.room, msg.text) else {
                    return;
                };
                self.hub
                    .broadcast_to_room(&room, SocketMessage::text(&text))
                    .await
                    .ok();
            }
            _ => {}
        }
    }
}
// --- end ---

#[test]
fn chat_room_example() {
    block_on(async {
        let chat = ChatRoom {
            hub: StreamHub::new(),
        };
        let (a, mut a_rx) = socket("a");
        let (b, mut b_rx) = socket("b");
        chat.hub.register(a.clone()).await.unwrap();
        chat.hub.register(b.clone()).await.unwrap();
        chat.handle_message(&a, r#"{"action":"join","room":"r"}"#)
            .await;
        chat.handle_message(&b, r#"{"action":"join","room":"r"}"#)
            .await;
        chat.handle_message(&a, r#"{"action":"message","room":"r","text":"yo"}"#)
            .await;
        chat.handle_message(&a, r#"{"action":"leave","room":"r"}"#)
            .await;
        chat.handle_message(&b, r#"{"action":"dance"}"#).await;
        // Malformed input is ignored, never a panic.
        chat.handle_message(&b, "not json").await;
        chat.handle_message(&b, r#"{"action":"join"}"#).await;
        chat.handle_message(&b, r#"{"action":"message","room":"r"}"#)
            .await;
        assert_eq!(
            drain_texts(&mut a_rx),
            ["User joined", "User joined", "yo", "User left"]
        );
        assert_eq!(drain_texts(&mut b_rx), ["User joined", "yo", "User left"]);
        assert_eq!(chat.hub.get_room_members("r").await, ["b"]);
    });
}

#[test]
fn error_handling() {
    block_on(async {
        let hub = StreamHub::new();
        let (gone, _rx) = socket("gone");
        let (closed, rx) = socket("closed");
        hub.register(closed.clone()).await.unwrap();
        drop(rx); // the client's transport went away: its queue is closed
        let mut outcomes = Vec::new();

        for socket_id in [gone.id.to_string(), closed.id.to_string()] {
            let msg = SocketMessage::text("hi");
            // --- guide: Error Handling ---
            match hub.send_to(&socket_id, msg).await {
                Ok(()) => println!("Sent"),
                Err(StreamError::SocketNotFound(id)) => println!("Socket {} disconnected", id),
                Err(StreamError::SendFailed(id)) => println!("Failed to send to {}", id),
                Err(e) => println!("Error: {}", e),
            }
            // --- end ---
            outcomes.push(hub.send_to(&socket_id, SocketMessage::text("hi")).await);
        }
        assert!(matches!(&outcomes[0], Err(StreamError::SocketNotFound(id)) if id == "gone"));
        assert!(matches!(&outcomes[1], Err(StreamError::SendFailed(id)) if id == "closed"));
    });
}
