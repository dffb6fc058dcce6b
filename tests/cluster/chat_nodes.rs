//! Two processes of the chat example joined through a real redis-server, with real
//! WebSocket clients on both.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::redis_server::RedisServer;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A chat example process; killed (SIGKILL, no goodbye) on drop.
struct ChatNode {
    child: Child,
    addr: SocketAddr,
}

fn chat_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = profile_dir.join("examples").join("chat");
    let rebuild = "build it with `cargo build --features redis --example chat` \
                   (`cargo test --all-features` does)";
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} missing: {rebuild}", bin.display()));
    // Running an example older than its source would test stale code.
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/chat.rs");
    if let Ok(src) = std::fs::metadata(source).and_then(|m| m.modified()) {
        assert!(
            built >= src,
            "{} is older than examples/chat.rs: {rebuild}",
            bin.display()
        );
    }
    bin
}

impl ChatNode {
    fn start(redis_url: &str) -> Self {
        let mut child = Command::new(chat_binary())
            .args(["127.0.0.1:0", "--redis", redis_url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chat");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut clustered = false;
        while addr.is_none() || !clustered {
            let line = lines
                .next()
                .expect("chat exited before listening (built without --features redis?)")
                .expect("read");
            if line.starts_with("cluster node ") {
                clustered = true;
            }
            if let Some(rest) = line.strip_prefix("chat listening on ws://") {
                addr = Some(rest.trim().parse().expect("address"));
            }
        }
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            addr: addr.expect("addr"),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChatNode {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn connect(addr: SocketAddr, user: &str) -> Ws {
    let url = format!("ws://{addr}/?user={user}");
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next JSON text frame within `wait`, if any.
async fn recv_within(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Reads frames until one matches `want` (within `wait`).
async fn recv_matching(
    ws: &mut Ws,
    wait: Duration,
    want: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = recv_within(ws, left).await?;
        if want(&v) {
            return Some(v);
        }
    }
}

async fn online(ws: &mut Ws) -> (Vec<String>, u64) {
    send(ws, json!({"action": "online"})).await;
    let v = recv_matching(ws, Duration::from_secs(5), |v| v["type"] == "online")
        .await
        .expect("online answer");
    let users = v["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u.as_str().expect("string").to_string())
        .collect();
    (users, v["connections"].as_u64().expect("connections"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chat_processes_share_rooms_and_presence_and_forget_a_killed_node() {
    let mut redis = RedisServer::start();
    let a = ChatNode::start(&redis.url());
    let mut b = ChatNode::start(&redis.url());
    // The demo auth hook refuses a user name outside its alphabet with 400.
    match tokio_tungstenite::connect_async(format!("ws://{}/?user=a%20b", a.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("expected 400, got {:?}", other.map(|_| ())),
    }
    let mut alice = connect(a.addr, "alice").await;
    let mut bob = connect(b.addr, "bob").await;

    // Presence across the processes, answered to the asker only.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (users, connections) = online(&mut alice).await;
        if users == ["alice", "bob"] && connections == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence never settled: {users:?} {connections}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recv_within(&mut bob, Duration::from_millis(100))
            .await
            .is_none()
    );

    for ws in [&mut alice, &mut bob] {
        send(ws, json!({"action": "join", "room": "lobby"})).await;
        recv_matching(ws, Duration::from_secs(5), |v| v["type"] == "joined")
            .await
            .expect("own join announced");
    }
    // A room split across the processes: alice's messages reach bob (retrying until bob's
    // node has subscribed), then in order.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        send(
            &mut alice,
            json!({"action": "message", "room": "lobby", "text": format!("hi {n}")}),
        )
        .await;
        let got = recv_matching(&mut bob, Duration::from_millis(300), |v| {
            v["type"] == "message"
        })
        .await;
        if got.is_some_and(|v| v["text"] == format!("hi {n}")) {
            break;
        }
        assert!(Instant::now() < deadline, "no cross-node delivery");
    }
    for i in 0..50 {
        send(
            &mut bob,
            json!({"action": "message", "room": "lobby", "text": format!("b{i}")}),
        )
        .await;
    }
    for i in 0..50 {
        let v = recv_matching(&mut alice, Duration::from_secs(5), |v| {
            v["type"] == "message" && v["text"].as_str().is_some_and(|t| t.starts_with('b'))
        })
        .await
        .expect("bob's message on alice's node");
        assert_eq!(v["text"], format!("b{i}"));
    }

    // Redis restarts: each node keeps serving its own clients, then both reconnect,
    // resubscribe and re-announce, and the room spans the processes again.
    redis.kill();
    send(
        &mut alice,
        json!({"action": "message", "room": "lobby", "text": "while down"}),
    )
    .await;
    let v = recv_matching(&mut alice, Duration::from_secs(5), |v| {
        v["type"] == "message"
    })
    .await
    .expect("local delivery while Redis is down");
    assert_eq!(v["text"], "while down");
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        n += 1;
        let text = format!("back {n}");
        send(
            &mut bob,
            json!({"action": "message", "room": "lobby", "text": text}),
        )
        .await;
        let got = recv_matching(&mut alice, Duration::from_millis(300), |v| {
            v["type"] == "message" && v["text"] == text
        })
        .await;
        if got.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "room not whole again after the Redis restart"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (users, connections) = online(&mut alice).await;
        if users == ["alice", "bob"] && connections == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence not whole again: {users:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Kill bob's node without a goodbye: bob goes offline on a within the bound (12 s TTL
    // by default, checked at least every probe interval).
    b.kill();
    let killed = Instant::now();
    loop {
        let (users, connections) = online(&mut alice).await;
        if users == ["alice"] && connections == 1 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "killed node still present after {:?}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(killed.elapsed() <= Duration::from_secs(16), "bound is 15 s");
}

/// Issue 13 across processes: a client of node a drops, 100 messages are sent from both
/// nodes while another client keeps sending throughout, and the client comes back on node b
/// with `since`: exactly what it missed, in Redis's offset order, then live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_client_recovers_on_the_other_process_what_it_missed() {
    let redis = RedisServer::start();
    let a = ChatNode::start(&redis.url());
    let b = ChatNode::start(&redis.url());
    let mut carol = connect(a.addr, "carol").await; // sends on a throughout
    let mut dave = connect(b.addr, "dave").await; // sends on b, and watches
    let mut erin = connect(a.addr, "erin").await; // drops and comes back on b
    for ws in [&mut carol, &mut dave, &mut erin] {
        send(ws, json!({"action": "join", "room": "lobby"})).await;
        recv_matching(ws, Duration::from_secs(5), |v| v["type"] == "joined")
            .await
            .expect("own join");
    }
    // Wait until the room spans both processes: a message from a reaches dave on b.
    let deadline = Instant::now() + Duration::from_secs(10);
    let last = loop {
        send(
            &mut carol,
            json!({"action": "message", "room": "lobby", "text": "ping"}),
        )
        .await;
        let got = recv_matching(&mut dave, Duration::from_millis(300), |v| {
            v["type"] == "message" && v["text"] == "ping"
        })
        .await;
        if got.is_some() {
            let v = recv_matching(&mut erin, Duration::from_secs(5), |v| v["text"] == "ping")
                .await
                .expect("erin gets it");
            break v;
        }
        assert!(Instant::now() < deadline, "room never spanned the nodes");
    };
    // Drain erin up to the newest ping so that `last` is her real last position.
    let mut last = last;
    while let Some(v) = recv_within(&mut erin, Duration::from_millis(200)).await {
        if v["offset"].is_u64() {
            last = v;
        }
    }
    let since = json!({"epoch": last["epoch"], "offset": last["offset"]});
    assert!(since["epoch"].as_u64().is_some_and(|e| e > 0), "{last}");
    drop(erin);

    // carol sends throughout on a; dave sends m0..m99 interleaved with her on b.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            n += 1;
            send(
                &mut carol,
                json!({"action": "message", "room": "lobby", "text": format!("c{n}")}),
            )
            .await;
            tokio::select! {
                _ = &mut stop_rx => return (carol, n),
                _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
    });
    for i in 0..100 {
        send(
            &mut dave,
            json!({"action": "message", "room": "lobby", "text": format!("m{i}")}),
        )
        .await;
    }
    let mut watched = Vec::new();
    loop {
        let v = recv_matching(&mut dave, Duration::from_secs(5), |v| v["offset"].is_u64())
            .await
            .expect("dave's watch");
        let done = v["text"] == "m99";
        watched.push(v);
        if done {
            break;
        }
    }

    // erin comes back on b with her position.
    let mut erin = connect(b.addr, "erin").await;
    send(
        &mut erin,
        json!({"action": "join", "room": "lobby", "since": since}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    stop_tx.send(()).expect("stop");
    let (mut carol, sent) = sender.await.expect("sender");
    send(
        &mut carol,
        json!({"action": "message", "room": "lobby", "text": "end"}),
    )
    .await;

    let mut got = Vec::new();
    let mut recovery = None;
    loop {
        let v = recv_within(&mut erin, Duration::from_secs(5))
            .await
            .expect("erin's frames");
        match v["type"].as_str() {
            Some("recovery") => recovery = Some(v),
            // Her own `joined` answer carries the room's position but is not a room frame.
            Some("joined") => {}
            // Every room frame (message, presence diff) has its place in the sequence.
            _ if v["offset"].is_u64() => {
                let done = v["text"] == "end";
                got.push(v);
                if done {
                    break;
                }
            }
            _ => {}
        }
    }
    let recovery = recovery.expect("a recovery frame");
    assert_eq!(recovery["recovered"], true, "{recovery}");
    assert!(
        recovery["replayed"].as_u64().is_some_and(|n| n >= 100),
        "{recovery}"
    );
    // One offset sequence, from her position on, no gap, no duplicate.
    let first = since["offset"].as_u64().expect("offset");
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v["epoch"], since["epoch"], "{v}");
        assert_eq!(
            v["offset"].as_u64(),
            Some(first + 1 + i as u64),
            "gap/dup at {v}"
        );
    }
    let texts: Vec<&str> = got.iter().filter_map(|v| v["text"].as_str()).collect();
    let ms: Vec<&str> = texts
        .iter()
        .copied()
        .filter(|t| t.starts_with('m'))
        .collect();
    let expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(ms, expected, "exactly the 100 missed, in order");
    let cs: Vec<u64> = texts
        .iter()
        .filter_map(|t| t.strip_prefix('c').and_then(|n| n.parse().ok()))
        .collect();
    assert_eq!(
        cs,
        (1..=sent).collect::<Vec<_>>(),
        "the concurrent sender's, once each"
    );
    // dave (who never left) saw the same frames in the same order.
    loop {
        let v = recv_matching(&mut dave, Duration::from_secs(5), |v| v["offset"].is_u64())
            .await
            .expect("dave's watch");
        let done = v["text"] == "end";
        watched.push(v);
        if done {
            break;
        }
    }
    let tail = &watched[watched.len() - got.len()..];
    assert_eq!(
        tail,
        &got[..],
        "the recovered client and the watcher disagree"
    );
}

/// Every node sees the cluster-wide presence events and announces them: each member must
/// still get one `presence_diff` per change, not one per node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_diff_reaches_each_member_once_across_two_processes() {
    let redis = RedisServer::start();
    let a = ChatNode::start(&redis.url());
    let b = ChatNode::start(&redis.url());
    let mut alice = connect(a.addr, "alice").await;
    let mut bob = connect(b.addr, "bob").await;
    for ws in [&mut alice, &mut bob] {
        send(ws, json!({"action": "join", "room": "lobby"})).await;
        recv_matching(ws, Duration::from_secs(5), |v| v["type"] == "joined")
            .await
            .expect("own join");
    }
    // Both see each other (through a diff or their state) before carol comes.
    for (ws, other) in [(&mut alice, "bob"), (&mut bob, "alice")] {
        let has = |v: &Value, key: &str| {
            v[key]
                .as_array()
                .is_some_and(|m| m.iter().any(|k| k.as_str() == Some(other)))
        };
        recv_matching(ws, Duration::from_secs(10), |v| {
            has(v, "joins") || (v["type"] == "presence_state" && has(v, "members"))
        })
        .await
        .unwrap_or_else(|| panic!("{other} never announced"));
    }
    // Let both nodes' windows pass, then drain.
    for ws in [&mut alice, &mut bob] {
        while recv_within(ws, Duration::from_millis(600)).await.is_some() {}
    }
    let mut carol = connect(a.addr, "carol").await;
    send(&mut carol, json!({"action": "join", "room": "lobby"})).await;
    for (name, ws) in [("alice", &mut alice), ("bob", &mut bob)] {
        let mut diffs = Vec::new();
        while let Some(v) = recv_within(ws, Duration::from_millis(1500)).await {
            let carol_joins = v["joins"]
                .as_array()
                .is_some_and(|j| j.iter().any(|k| k.as_str() == Some("carol")));
            if v["type"] == "presence_diff" && carol_joins {
                diffs.push(v);
            }
        }
        assert_eq!(
            diffs.len(),
            1,
            "{name} got carol's join {} times: {diffs:?}",
            diffs.len()
        );
    }
}
