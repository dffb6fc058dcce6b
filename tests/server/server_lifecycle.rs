//! A connection's life over loopback: on_connect, messages in order (text and binary,
//! fragmented or not), unregister then on_disconnect exactly once, whatever the ending.

use crate::support::wire::*;
use futures_util::SinkExt;
use nucleus_stream::server::ServerConfig;
use nucleus_stream::{SocketMessage, StreamHub};
use tokio_tungstenite::tungstenite::Message;

transport_tests! {
#[tokio::test]
async fn messages_reach_the_handler_in_order_and_echo_back_in_order(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(Some("lobby"), true);
    // A burst of 200 is over the default inbound rate limit (bursts of 100): lift it.
    let config = ServerConfig::default().inbound_rate(None);
    let server = start_on(t, &hub, rec.clone(), config).await;
    let mut ws = ws_connect(server.local_addr(), "/").await;

    let mut expected = Vec::new();
    for i in 0..200u32 {
        let msg = if i % 3 == 0 {
            Message::Binary(i.to_be_bytes().to_vec().into())
        } else {
            Message::text(format!("m{i}"))
        };
        expected.push(msg.clone());
        ws.feed(msg).await.unwrap();
    }
    ws.flush().await.unwrap();
    for want in &expected {
        assert_eq!(next_data(&mut ws).await.as_ref(), Some(want));
    }
    let id = rec.connected_ids()[0].clone();
    let handled: Vec<SocketMessage> = rec
        .seen()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Message(from, m) => {
                assert_eq!(from, id);
                Some(m)
            }
            _ => None,
        })
        .collect();
    assert_eq!(handled.len(), 200);
    assert_eq!(handled[1], SocketMessage::text("m1"));
    assert_eq!(
        handled[3],
        SocketMessage::binary(3u32.to_be_bytes().to_vec())
    );
    // on_connect ran first and joined the room.
    assert!(matches!(rec.seen()[0], Seen::Connect { .. }));
    assert_eq!(hub.get_room_members("lobby").await, vec![id.clone()]);

    // A normal close: the client gets its close echoed, the hub forgets the socket, and
    // on_disconnect runs exactly once.
    ws.close(None).await.unwrap();
    assert_eq!(close_code(&mut ws).await, None);
    drop(ws);
    eventually("on_disconnect", || rec.disconnects() == vec![id.clone()]).await;
    assert_eq!(hub.connection_count().await, 0);
    assert!(hub.get_room("lobby").await.is_none());
    eventually("the task to end", || server.connections() == 0).await;
}
}

transport_tests! {
#[tokio::test]
async fn fragmented_messages_are_reassembled_and_a_vanishing_peer_is_cleaned_up(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let server = start_on(t, &hub, rec.clone(), ServerConfig::default()).await;
    let mut raw = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    raw.send_frame(false, OP_TEXT, "héllo ".as_bytes()).await;
    raw.send_frame(true, OP_PING, b"mid").await; // control frames may interleave
    raw.send_frame(false, OP_CONT, "wörld".as_bytes()).await;
    raw.send_frame(true, OP_CONT, b"!").await;
    let mut texts = Vec::new();
    while texts.is_empty() {
        let f = raw.read_frame().await.expect("frame");
        if f.opcode == OP_TEXT {
            texts.push(String::from_utf8(f.payload).unwrap());
        }
    }
    assert_eq!(texts, vec!["héllo wörld!".to_string()]);

    // The TCP connection just disappears (no close frame).
    drop(raw);
    eventually("on_disconnect", || rec.disconnects().len() == 1).await;
    assert_eq!(hub.connection_count().await, 0);
    eventually("the task to end", || server.connections() == 0).await;
}
}

transport_tests! {
#[tokio::test]
async fn unregistering_a_socket_from_the_app_closes_it_after_its_backlog(t) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, false);
    let server = start_on(t, &hub, rec.clone(), ServerConfig::default()).await;
    let mut ws = ws_connect(server.local_addr(), "/").await;
    eventually("connect", || rec.connected_ids().len() == 1).await;
    let id = rec.connected_ids()[0].clone();

    hub.send_to(&id, SocketMessage::text("you are being kicked"))
        .await
        .unwrap();
    hub.unregister(&id).await;
    assert_eq!(
        next_text(&mut ws).await.as_deref(),
        Some("you are being kicked")
    );
    assert_eq!(close_code(&mut ws).await, Some(1000));
    eventually("on_disconnect", || rec.disconnects() == vec![id.clone()]).await;
}
}
