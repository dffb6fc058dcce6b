//! The echo example's handler and limits: text and binary come back unchanged, in order,
//! including messages far above the default 64 KiB limit.

#[allow(dead_code)]
#[path = "../../examples/echo.rs"]
mod echo;

use crate::support::wire::*;
use futures_util::SinkExt;
use nucleus_stream::StreamHub;
use nucleus_stream::server::Server;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echoes_text_and_binary_up_to_16_mib() {
    let server = Server::new(StreamHub::new(), echo::Echo)
        .config(echo::config())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut ws = ws_connect(server.local_addr(), "/").await;
    let big_text: String = "ab€".repeat(1 << 20); // 5 MiB of UTF-8
    let big_binary: Vec<u8> = (0..(6 << 20)).map(|i| (i % 251) as u8).collect();
    let sent = vec![
        Message::text("small"),
        Message::Binary(big_binary.into()),
        Message::text(big_text),
        Message::Binary(Vec::new().into()),
        Message::text(""),
    ];
    for m in &sent {
        ws.feed(m.clone()).await.unwrap();
    }
    ws.flush().await.unwrap();
    for want in &sent {
        let got = next_data(&mut ws).await.expect("echo");
        assert_eq!(&got, want);
    }

    // Over 16 MiB: 1009, as for any limit.
    let mut raw = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    raw.send_raw(&client_frame(
        true,
        OP_BINARY,
        &vec![0u8; (16 << 20) + 1],
        true,
    ))
    .await;
    assert_eq!(raw.read_until_close(|_| {}).await, Some(1009));
}
