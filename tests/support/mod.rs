//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[cfg(feature = "server")]
#[macro_use]
pub mod wire;

use nucleus_stream::{
    QueueConfig, Receiver, SocketMessage, StreamHub, TryRecvError, WebSocket, channel,
};

/// Runs a future that never awaits anything external (every hub method) to completion.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A socket with a default queue, plus its receiver.
pub fn socket(id: &str) -> (WebSocket, Receiver) {
    let (tx, rx) = channel(QueueConfig::default());
    (WebSocket::new(id, tx), rx)
}

/// An authenticated socket with a default queue, plus its receiver.
pub fn user_socket(id: &str, user: &str) -> (WebSocket, Receiver) {
    let (tx, rx) = channel(QueueConfig::default());
    (WebSocket::authenticated(id, user.to_string(), tx), rx)
}

/// Registers `n` sockets named `{prefix}{i}` and returns their receivers in order.
pub async fn register_many(hub: &StreamHub, prefix: &str, n: usize) -> Vec<Receiver> {
    let mut rxs = Vec::with_capacity(n);
    for i in 0..n {
        let (s, rx) = socket(&format!("{prefix}{i}"));
        hub.register(s).await.expect("register");
        rxs.push(rx);
    }
    rxs
}

/// Everything queued now.
pub fn drain(rx: &mut Receiver) -> Vec<SocketMessage> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(m) => out.push(m),
            Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => return out,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

/// Texts queued now.
pub fn drain_texts(rx: &mut Receiver) -> Vec<String> {
    drain(rx)
        .into_iter()
        .map(|m| m.as_text().expect("text").to_string())
        .collect()
}

/// Sorted copy.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
