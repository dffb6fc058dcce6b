//! Messages one read brings reach the handler as one burst (`on_messages`), in order, up to
//! a control frame, which is answered after the burst before it; what ends the connection (a
//! close, a fault) is acted on only once the messages before it were handled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::wire::*;
use nucleus_stream::server::ServerConfig;
use nucleus_stream::{SocketMessage, StreamHandler, StreamHub, WebSocket, async_trait};

#[derive(Debug, Clone, PartialEq)]
enum Call {
    One(String),
    Many(Vec<String>),
    Gone,
}

/// Records how messages arrive: one at a time or as a burst. A burst is handled slowly, so a
/// close read with it would overtake it if the connection did not wait.
#[derive(Default)]
struct Bursts {
    calls: Mutex<Vec<Call>>,
}

impl Bursts {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

fn text(msg: &SocketMessage) -> String {
    msg.as_text().expect("text").to_string()
}

#[async_trait]
impl StreamHandler for Bursts {
    async fn on_message(&self, _: &StreamHub, _: &WebSocket, msg: SocketMessage) {
        self.calls.lock().unwrap().push(Call::One(text(&msg)));
    }

    async fn on_messages(&self, _: &StreamHub, _: &WebSocket, msgs: Vec<SocketMessage>) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let texts = msgs.iter().map(text).collect();
        self.calls.lock().unwrap().push(Call::Many(texts));
    }

    async fn on_disconnect(&self, _: &StreamHub, _: &str) {
        self.calls.lock().unwrap().push(Call::Gone);
    }
}

/// A bundled server with a [`Bursts`] handler, and a raw client connected to it.
async fn serve_bursts() -> (Arc<Bursts>, TestServer, RawClient) {
    let hub = StreamHub::new();
    let handler = Arc::new(Bursts::default());
    let server = start_on(
        Transport::Bundled,
        &hub,
        handler.clone(),
        ServerConfig::default(),
    )
    .await;
    let c = RawClient::connect(server.local_addr(), "/", &[])
        .await
        .expect_open();
    (handler, server, c)
}

#[tokio::test]
async fn messages_read_together_are_one_burst_and_a_close_read_with_them_waits_for_it() {
    let (handler, server, mut c) = serve_bursts().await;
    // One write: three messages with a ping among them, then a close.
    let mut bytes = Vec::new();
    bytes.extend(client_frame(true, OP_TEXT, b"m0", true));
    bytes.extend(client_frame(true, OP_TEXT, b"m1", true));
    bytes.extend(client_frame(true, OP_PING, b"p", true));
    bytes.extend(client_frame(true, OP_TEXT, b"m2", true));
    bytes.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes(), true));
    c.send_raw(&bytes).await;
    let mut pongs = Vec::new();
    let code = within(
        "the close",
        c.read_until_close(|f| {
            if f.opcode == OP_PONG {
                pongs.push(f.payload.clone());
            }
        }),
    )
    .await;
    assert_eq!(code, Some(1000));
    assert_eq!(
        pongs,
        [b"p".to_vec()],
        "the ping among the messages is answered"
    );
    eventually("on_disconnect", || {
        handler.calls().last() == Some(&Call::Gone)
    })
    .await;
    let calls = handler.calls();
    // Loopback delivers one write to one read: the two messages before the ping are one
    // burst, the one after it is alone, and both were handled before the close ended the
    // connection.
    assert_eq!(
        calls,
        [
            Call::Many(vec!["m0".into(), "m1".into()]),
            Call::One("m2".into()),
            Call::Gone
        ]
    );
    server.shutdown();
}

/// A message read alone goes to `on_message`, as before bursts existed.
#[tokio::test]
async fn a_message_read_alone_goes_to_on_message() {
    let (handler, server, mut c) = serve_bursts().await;
    c.send_text("alone").await;
    eventually("on_message", || !handler.calls().is_empty()).await;
    assert_eq!(handler.calls(), [Call::One("alone".into())]);
    server.shutdown();
}

/// A fault read with a burst (invalid UTF-8 in the third message) closes the connection with
/// 1007 only after the two messages before it were handled.
#[tokio::test]
async fn a_fault_read_with_a_burst_closes_after_the_burst_was_handled() {
    let (handler, server, mut c) = serve_bursts().await;
    let mut bytes = Vec::new();
    bytes.extend(client_frame(true, OP_TEXT, b"m0", true));
    bytes.extend(client_frame(true, OP_TEXT, b"m1", true));
    bytes.extend(client_frame(true, OP_TEXT, &[0xC3, 0x28], true));
    c.send_raw(&bytes).await;
    let code = within("the close", c.read_until_close(|_| {})).await;
    assert_eq!(code, Some(1007));
    eventually("on_disconnect", || {
        handler.calls().last() == Some(&Call::Gone)
    })
    .await;
    assert_eq!(
        handler.calls(),
        [Call::Many(vec!["m0".into(), "m1".into()]), Call::Gone]
    );
    server.shutdown();
}
