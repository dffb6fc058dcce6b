//! Shared helpers of the loom models.

pub use loom::future::block_on;
pub use loom::thread;
pub use nucleus_stream::{
    BroadcastReport, CloseReason, HubConfig, OverflowPolicy, QueueConfig, Receiver, Sender,
    SocketMessage, StreamError, StreamHub, TryRecvError, TrySendError, Utf8Bytes, WebSocket,
    channel,
};

/// Runs `f` under loom. `LOOM_MAX_PREEMPTIONS` (default 3 here) bounds the preemptions per
/// execution; `LOOM_MAX_BRANCHES` defaults to 20,000 here (hub operations are long). Prints
/// how many executions loom explored (visible with `--nocapture`).
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A plain std counter, outside the model: it only counts executions.
    let executions = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&executions);
    let f = move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    };
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = Some(3);
    }
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = 20_000;
    }
    builder.check(f);
    let name = std::thread::current().name().unwrap_or("model").to_string();
    println!("{name}: {} executions", executions.load(Ordering::Relaxed));
}

/// A hub small enough for loom: one shard per index.
pub fn hub() -> StreamHub {
    StreamHub::with_config(HubConfig::default().shards(1))
}

/// A text message without allocation (a static `Bytes`: no reference count to model).
pub fn msg(text: &'static str) -> SocketMessage {
    SocketMessage::Text(Utf8Bytes::from_static(text))
}

/// An anonymous socket with a roomy queue.
pub fn socket(id: &'static str) -> (WebSocket, Receiver) {
    let (tx, rx) = channel(QueueConfig::default().max_messages(8));
    (WebSocket::new(id, tx), rx)
}

/// An authenticated socket with a roomy queue.
pub fn user_socket(id: &'static str, user: &'static str) -> (WebSocket, Receiver) {
    let (tx, rx) = channel(QueueConfig::default().max_messages(8));
    (WebSocket::authenticated(id, user, tx), rx)
}

/// Registers a socket from the model's main thread before the threads start.
pub fn registered(hub: &StreamHub, id: &'static str) -> Receiver {
    let (s, rx) = socket(id);
    block_on(hub.register(s)).expect("fresh id");
    rx
}

/// Everything queued now, in order, without waiting.
pub fn drain(rx: &mut Receiver) -> Vec<SocketMessage> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
    out
}

/// The texts of `msgs`, in order.
pub fn texts(msgs: &[SocketMessage]) -> Vec<&str> {
    msgs.iter().map(|m| m.as_text().expect("text")).collect()
}

/// How many times `text` occurs in `msgs`.
pub fn count(msgs: &[SocketMessage], text: &str) -> usize {
    msgs.iter().filter(|m| m.as_text() == Some(text)).count()
}

/// The room's members, sorted.
pub fn members(hub: &StreamHub, room: &str) -> Vec<String> {
    let mut m = block_on(hub.get_room_members(room));
    m.sort();
    m
}
