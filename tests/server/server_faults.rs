//! Bad input over a real loopback socket: each fault closes only the faulty connection, with
//! the right close code, while a well-behaved client on the same server keeps working.

use crate::support::wire::*;
use nucleus_stream::server::ServerConfig;
use nucleus_stream::{SocketMessage, StreamHub};

/// A server with a 1 KiB message limit and an echoing recorder, plus one healthy client.
async fn setup(t: Transport) -> (StreamHub, std::sync::Arc<Recorder>, TestServer, WsClient) {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let server = start_on(t, &hub, rec.clone(), ServerConfig::default().max_size(1024)).await;
    let healthy = ws_connect(server.local_addr(), "/").await;
    (hub, rec, server, healthy)
}

/// The healthy client still gets its echo, and the faulty connection is fully gone.
async fn healthy_still_served(healthy: &mut WsClient, hub: &StreamHub, rec: &Recorder, tag: &str) {
    send_text(healthy, tag).await;
    assert_eq!(next_text(healthy).await.as_deref(), Some(tag));
    eventually("the faulty socket's on_disconnect", || {
        rec.disconnects().len() == 1
    })
    .await;
    assert_eq!(
        hub.connection_count().await,
        1,
        "only the healthy client remains"
    );
}

transport_tests! {
#[tokio::test]
async fn message_over_the_limit_closes_with_1009(t) {
    let (hub, rec, server, mut healthy) = setup(t).await;
    let mut bad = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    bad.send_frame(true, OP_TEXT, &vec![b'x'; 2000]).await;
    assert_eq!(bad.read_until_close(|_| {}).await, Some(1009));
    bad.wait_eof().await;
    drop(bad);
    healthy_still_served(&mut healthy, &hub, &rec, "after 1009").await;

    // A message assembled from fragments that each fit but together do not: also 1009.
    let mut frag = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    frag.send_frame(false, OP_BINARY, &[1u8; 800]).await;
    frag.send_frame(true, OP_CONT, &[2u8; 800]).await;
    assert_eq!(frag.read_until_close(|_| {}).await, Some(1009));
    // Nothing over the limit ever reached the handler.
    assert!(rec.seen().iter().all(|s| match s {
        Seen::Message(_, m) => m.len() <= 1024,
        _ => true,
    }));
}
}

transport_tests! {
#[tokio::test]
async fn invalid_utf8_text_closes_with_1007(t) {
    let (hub, rec, server, mut healthy) = setup(t).await;
    let mut bad = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    bad.send_frame(true, OP_TEXT, &[b'o', b'k', 0xff, 0xfe])
        .await;
    assert_eq!(bad.read_until_close(|_| {}).await, Some(1007));
    drop(bad);
    healthy_still_served(&mut healthy, &hub, &rec, "after 1007").await;
}
}

transport_tests! {
#[tokio::test]
async fn protocol_violations_close_with_1002(t) {
    let (hub, rec, server, mut healthy) = setup(t).await;
    let addr = server.local_addr();

    // An unmasked client frame.
    let mut unmasked = RawClient::connect(addr, "/", &[]).await.expect_open();
    unmasked
        .send_raw(&client_frame(true, OP_TEXT, b"hello", false))
        .await;
    assert_eq!(unmasked.read_until_close(|_| {}).await, Some(1002));
    drop(unmasked);
    healthy_still_served(&mut healthy, &hub, &rec, "after unmasked").await;

    // A reserved opcode.
    let mut reserved = RawClient::connect(addr, "/", &[]).await.expect_open();
    reserved.send_frame(true, 0x3, b"?").await;
    assert_eq!(reserved.read_until_close(|_| {}).await, Some(1002));
    drop(reserved);

    // A continuation with nothing to continue.
    let mut orphan = RawClient::connect(addr, "/", &[]).await.expect_open();
    orphan.send_frame(true, OP_CONT, b"tail").await;
    assert_eq!(orphan.read_until_close(|_| {}).await, Some(1002));
    drop(orphan);

    // A fragmented control frame.
    let mut fragmented_ping = RawClient::connect(addr, "/", &[]).await.expect_open();
    fragmented_ping.send_frame(false, OP_PING, b"p").await;
    assert_eq!(fragmented_ping.read_until_close(|_| {}).await, Some(1002));
    drop(fragmented_ping);

    // Reserved bits set.
    let mut rsv = RawClient::connect(addr, "/", &[]).await.expect_open();
    let mut frame = client_frame(true, OP_TEXT, b"x", true);
    frame[0] |= 0x40;
    rsv.send_raw(&frame).await;
    assert_eq!(rsv.read_until_close(|_| {}).await, Some(1002));
    drop(rsv);

    send_text(&mut healthy, "still here").await;
    assert_eq!(next_text(&mut healthy).await.as_deref(), Some("still here"));
    eventually("every faulty socket's on_disconnect", || {
        rec.disconnects().len() == 5
    })
    .await;
    assert_eq!(hub.connection_count().await, 1);
    // None of the bad frames reached the handler.
    let healthy_msgs: Vec<SocketMessage> = rec
        .seen()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Message(_, m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(
        healthy_msgs,
        vec![
            SocketMessage::text("after unmasked"),
            SocketMessage::text("still here")
        ]
    );
}
}

transport_tests! {
#[tokio::test]
async fn garbage_instead_of_a_handshake_is_dropped(t) {
    let (hub, rec, server, mut healthy) = setup(t).await;
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"\x16\x03\x01\x02\x00 definitely not http\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    within("the server to drop garbage", stream.read_to_end(&mut sink))
        .await
        .ok();
    send_text(&mut healthy, "fine").await;
    assert_eq!(next_text(&mut healthy).await.as_deref(), Some("fine"));
    eventually("the refused connection to be released", || {
        server.connections() == 1
    })
    .await;
    assert!(
        rec.disconnects().is_empty(),
        "never registered, never disconnected"
    );
    assert_eq!(hub.connection_count().await, 1);
}
}

transport_tests! {
/// Frames are processed in order: the replies to valid messages that arrived in the same read
/// as a bad frame are still sent, then the close (RFC 6455 §5; Autobahn 3.2, 4.1.3, 5.15,
/// 6.4.3 check it as strict).
#[tokio::test]
async fn replies_to_messages_before_a_bad_frame_go_out_before_the_close(t) {
    let (hub, rec, server, mut healthy) = setup(t).await;
    let mut bad = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    let mut burst = client_frame(true, OP_TEXT, b"first", true);
    burst.extend(client_frame(true, OP_TEXT, b"second", true));
    // Reserved bit RSV1 set, no extension negotiated: a protocol error.
    let mut reserved = client_frame(true, OP_TEXT, b"bad", true);
    reserved[0] |= 0x40;
    burst.extend(reserved);
    bad.send_raw(&burst).await;
    let mut echoes = Vec::new();
    let code = bad
        .read_until_close(|frame| {
            if frame.opcode == OP_TEXT {
                echoes.push(frame.payload.clone());
            }
        })
        .await;
    assert_eq!(code, Some(1002));
    assert_eq!(echoes, [b"first".to_vec(), b"second".to_vec()]);
    bad.wait_eof().await;
    drop(bad);
    healthy_still_served(&mut healthy, &hub, &rec, "after 1002").await;
}
}
