//! `StreamService::serve_upgraded`: the hub's connection on a byte stream that another stack
//! upgraded (here a hand-rolled HTTP upgrade over a real loopback `TcpStream`).

use std::time::Duration;

use crate::support::wire::*;
use nucleus_stream::StreamHub;
use nucleus_stream::server::{Admission, ServerConfig, StreamService};
use tokio::net::TcpListener;

#[tokio::test]
async fn an_upgraded_stream_runs_the_hubs_connection_and_shuts_down_with_1001() {
    let hub = StreamHub::new();
    let rec = Recorder::new(Some("lobby"), true);
    let service =
        StreamService::with_shared_handler(hub.clone(), rec.clone(), ServerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let client = tokio::spawn(async move {
        let mut c = RawClient::connect(addr, "/", &[]).await.expect_open();
        c.send_text("hello").await;
        c
    });
    let stream = within("the upgrade", foreign_upgrade(&listener)).await;
    let task = tokio::spawn(service.serve_upgraded(stream, Admission::user("alice"), None));
    let mut c = client.await.unwrap();

    // The echo comes back through the hub's queue and writer.
    let frame = within("the echo", c.read_frame()).await.expect("a frame");
    assert_eq!(frame.payload, b"hello");
    assert_eq!(service.connections(), 1);
    assert_eq!(hub.connection_count().await, 1);
    assert!(hub.is_user_online("alice").await);

    // Graceful shutdown reaches the socket: 1001, then the connection ends, on_disconnect ran.
    service.shutdown();
    let code = within("the close", c.read_until_close(|_| {})).await;
    assert_eq!(code, Some(1001));
    drop(c);
    within("stopped", service.stopped()).await;
    task.await.unwrap();
    assert_eq!(service.connections(), 0);
    assert_eq!(hub.connection_count().await, 0);
    assert_eq!(rec.disconnects().len(), 1);
}

#[tokio::test]
async fn a_stream_served_after_shutdown_is_closed_at_once() {
    let hub = StreamHub::new();
    let rec = Recorder::new(None, true);
    let config = ServerConfig::default().shutdown_timeout(Duration::from_secs(2));
    let service = StreamService::with_shared_handler(hub.clone(), rec.clone(), config);
    service.shutdown();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client =
        tokio::spawn(async move { RawClient::connect(addr, "/", &[]).await.expect_open() });
    let stream = within("the upgrade", foreign_upgrade(&listener)).await;
    let task = tokio::spawn(service.serve_upgraded(stream, Admission::anonymous(), None));
    let mut c = client.await.unwrap();
    assert_eq!(
        within("the close", c.read_until_close(|_| {})).await,
        Some(1001)
    );
    drop(c);
    within("the connection to end", task).await.unwrap();
    within("stopped", service.stopped()).await;
    assert_eq!(hub.connection_count().await, 0);
}
