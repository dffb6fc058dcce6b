//! Room history across nodes (issue 13): offsets assigned by Redis, recovery on any node,
//! a Redis restart changing the epoch. Real redis-server, hubs in one process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nucleus_stream::cluster::RedisCluster;
use nucleus_stream::{
    HistoryConfig, HubConfig, QueueConfig, Receiver, SocketMessage, StreamHub, StreamPosition,
    WebSocket, channel,
};

use crate::redis_server::RedisServer;
use crate::{WAIT, config, recv_text};

/// Writes the position into the payload: `text|epoch|offset`.
fn stamp(pos: StreamPosition, msg: &SocketMessage) -> SocketMessage {
    SocketMessage::text(format!(
        "{}|{}|{}",
        msg.as_text().unwrap_or(""),
        pos.epoch,
        pos.offset
    ))
}

fn parse(frame: &str) -> (String, StreamPosition) {
    let mut parts = frame.rsplitn(3, '|');
    let offset = parts.next().and_then(|o| o.parse().ok()).expect("offset");
    let epoch = parts.next().and_then(|e| e.parse().ok()).expect("epoch");
    let text = parts.next().expect("text").to_string();
    (text, StreamPosition::new(epoch, offset))
}

struct HNode {
    hub: StreamHub,
    cluster: RedisCluster,
}

impl HNode {
    async fn start(url: &str, name: &str, max_messages: usize) -> Self {
        let history = HistoryConfig::default()
            .prefix("h:")
            .max_messages(max_messages)
            .stamp(stamp);
        let hub = StreamHub::with_config(HubConfig::default().history(history));
        let cluster = RedisCluster::start(&hub, config(url, name)).expect("start cluster");
        assert!(cluster.ready(WAIT).await, "{name} did not connect");
        Self { hub, cluster }
    }

    async fn socket(&self) -> (String, Receiver) {
        let (tx, rx) = channel(QueueConfig::default().max_messages(100_000));
        let id = self.hub.next_socket_id().to_string();
        self.hub
            .register(WebSocket::new(id.clone(), tx))
            .await
            .expect("register");
        (id, rx)
    }

    async fn member(&self, room: &str) -> (String, Receiver) {
        let (id, rx) = self.socket().await;
        self.hub.join_room(&id, room).await.expect("join");
        (id, rx)
    }

    async fn synced(&self) {
        assert!(self.cluster.synced(WAIT).await, "subscriptions not applied");
    }

    async fn say(&self, room: &str, text: &str) {
        self.hub
            .broadcast_to_room(room, SocketMessage::text(text))
            .await
            .expect("broadcast");
    }
}

/// Receives until `text` arrives; returns everything up to and including it.
async fn until(rx: &mut Receiver, text: &str) -> Vec<(String, StreamPosition)> {
    until_all(rx, &[text]).await
}

/// Receives until every one of `texts` has arrived; returns everything up to the last of them.
async fn until_all(rx: &mut Receiver, texts: &[&str]) -> Vec<(String, StreamPosition)> {
    let mut out = Vec::new();
    let mut left: Vec<&str> = texts.to_vec();
    while !left.is_empty() {
        let frame = parse(&recv_text(rx).await);
        left.retain(|t| *t != frame.0);
        out.push(frame);
    }
    out
}

fn assert_consecutive(frames: &[(String, StreamPosition)], after: StreamPosition, who: &str) {
    for (i, (text, pos)) in frames.iter().enumerate() {
        assert_eq!(pos.epoch, after.epoch, "{who}: epoch of {text}");
        assert_eq!(
            pos.offset,
            after.offset + 1 + i as u64,
            "{who}: gap or duplicate at {text} (frame {i})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_recovers_on_another_node_exactly_once_in_order_with_a_concurrent_publisher() {
    let redis = RedisServer::start();
    let a = HNode::start(&redis.url(), "a", 1_000).await;
    let b = HNode::start(&redis.url(), "b", 1_000).await;
    let room = "h:lobby";
    let (_, mut watch_a) = a.member(room).await;
    let (client, mut rx) = a.member(room).await;
    a.synced().await;
    b.synced().await;

    a.say(room, "hello").await;
    let (_, seen) = until(&mut rx, "hello").await.pop().expect("hello");
    until(&mut watch_a, "hello").await;
    // The client drops.
    a.hub.unregister(&client).await.expect("unregister");

    // A concurrent publisher on b runs throughout: while the client is away, while it
    // recovers, and after.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let hub = b.hub.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                hub.broadcast_to_room(room, SocketMessage::text(format!("p{n}")))
                    .await
                    .expect("broadcast");
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
            n
        })
    };
    for i in 0..100 {
        let node = if i % 2 == 0 { &a } else { &b };
        node.say(room, &format!("m{i}")).await;
    }
    // Let every missed broadcast reach Redis before the client comes back: each node's last
    // one (a's m98, b's m99) back from Redis, as a node's publishes keep their order but
    // the two nodes' publishes race each other (seeing only m99 once let the recovery read
    // the store before a's last messages were in it, so fewer than 100 came from the store).
    let mut watched = until_all(&mut watch_a, &["m98", "m99"]).await;

    // The client comes back on node b, which has no member in the room.
    let (client2, mut rx2) = b.socket().await;
    let recovery = b
        .hub
        .join_room_since(&client2, room, Some(seen))
        .await
        .expect("join since");
    assert!(recovery.recovered, "{recovery:?}");
    assert!(recovery.replayed >= 100, "{recovery:?}");
    assert_eq!(recovery.position.epoch, seen.epoch);
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    let published = publisher.await.expect("publisher");
    assert!(published > 0);
    b.say(room, "end").await;

    let got = until(&mut rx2, "end").await;
    assert_consecutive(&got, seen, "recovered client");
    // Exactly the 100 missed, each once; each node's in the order it sent them (across nodes
    // the order is Redis's, the same for everyone: checked against the watcher below).
    for parity in 0..2 {
        let missed: Vec<&str> = got
            .iter()
            .map(|(t, _)| t.as_str())
            .filter(|t| {
                t.strip_prefix('m')
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| n % 2 == parity)
            })
            .collect();
        let expected: Vec<String> = (parity..100).step_by(2).map(|i| format!("m{i}")).collect();
        assert_eq!(missed, expected, "the missed broadcasts of node {parity}");
    }
    // The concurrent publisher's messages are all there, in their order, once each.
    let ps: Vec<u64> = got
        .iter()
        .filter_map(|(t, _)| t.strip_prefix('p').and_then(|n| n.parse().ok()))
        .collect();
    assert_eq!(ps, (1..=published).collect::<Vec<_>>());
    // The watcher that never left saw the same sequence, in the same order.
    watched.extend(until(&mut watch_a, "end").await);
    assert_eq!(
        watched, got,
        "the recovered client and the watcher disagree"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_see_one_offset_sequence_for_messages_published_on_different_nodes() {
    let redis = RedisServer::start();
    let nodes = [
        HNode::start(&redis.url(), "a", 1_000).await,
        HNode::start(&redis.url(), "b", 1_000).await,
        HNode::start(&redis.url(), "c", 1_000).await,
    ];
    let room = "h:shared";
    let mut watchers = Vec::new();
    for n in &nodes {
        watchers.push(n.member(room).await.1);
    }
    for n in &nodes {
        n.synced().await;
    }
    let mut tasks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let hub = n.hub.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..100 {
                hub.broadcast_to_room(room, SocketMessage::text(format!("n{i}-{k}")))
                    .await
                    .expect("broadcast");
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    // The nodes' publishers are independent queues: collect all 300 on every node.
    let mut seen = Vec::new();
    for w in &mut watchers {
        let mut frames = Vec::new();
        for _ in 0..300 {
            frames.push(parse(&recv_text(w).await));
        }
        crate::assert_quiet(w).await;
        seen.push(frames);
    }
    let first = seen[0][0].1;
    assert_eq!(first.offset, 1);
    assert_consecutive(&seen[0], StreamPosition::new(first.epoch, 0), "node a");
    assert_eq!(seen[0], seen[1], "a and b disagree");
    assert_eq!(seen[0], seen[2], "a and c disagree");
    // Each node's own messages keep their order within the one sequence.
    for i in 0..3 {
        let own: Vec<&str> = seen[0]
            .iter()
            .map(|(t, _)| t.as_str())
            .filter(|t| t.starts_with(&format!("n{i}-")))
            .collect();
        let expected: Vec<String> = (0..100).map(|k| format!("n{i}-{k}")).collect();
        assert_eq!(own, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_beyond_the_window_or_ahead_is_not_recovered_and_joins_live() {
    let redis = RedisServer::start();
    let a = HNode::start(&redis.url(), "a", 10).await;
    let b = HNode::start(&redis.url(), "b", 10).await;
    let room = "h:small";
    let (_, mut watch) = a.member(room).await;
    a.synced().await;
    a.say(room, "first").await;
    let (_, seen) = until(&mut watch, "first").await.pop().expect("first");
    for i in 0..30 {
        b.say(room, &format!("m{i}")).await;
    }
    until(&mut watch, "m29").await;

    let (late, mut rx) = b.socket().await;
    let recovery = b
        .hub
        .join_room_since(&late, room, Some(seen))
        .await
        .expect("join");
    assert!(
        !recovery.recovered,
        "30 behind a window of 10: {recovery:?}"
    );
    assert_eq!(recovery.replayed, 0);
    assert!(recovery.joined);
    b.synced().await;
    a.say(room, "live").await;
    assert_eq!(parse(&recv_text(&mut rx).await).0, "live", "joined live");

    // Ahead of the log, and another epoch: not recovered either.
    let (ahead, _rx) = a.socket().await;
    let future = StreamPosition::new(seen.epoch, seen.offset + 1_000);
    let r = a
        .hub
        .join_room_since(&ahead, room, Some(future))
        .await
        .expect("join");
    assert!(!r.recovered, "{r:?}");
    let (other, _rx) = b.socket().await;
    let wrong = StreamPosition::new(seen.epoch ^ 1, 31);
    let r = b
        .hub
        .join_room_since(&other, room, Some(wrong))
        .await
        .expect("join");
    assert!(!r.recovered, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_changes_the_epoch_and_old_positions_are_not_recovered() {
    let mut redis = RedisServer::start();
    let a = HNode::start(&redis.url(), "a", 1_000).await;
    let b = HNode::start(&redis.url(), "b", 1_000).await;
    let room = "h:restart";
    let (_, mut watch) = a.member(room).await;
    a.synced().await;
    a.say(room, "before").await;
    let (_, old) = until(&mut watch, "before").await.pop().expect("before");

    // While Redis is down a history room's messages still reach this node's members: live,
    // without a position (not stamped), counted.
    redis.kill();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        a.say(room, "while down").await;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(700), watch.recv()).await {
            assert_eq!(m.as_text(), Some("while down"), "unstamped: not in the log");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no local delivery while down"
        );
    }
    assert!(a.cluster.stats().history_unlogged >= 1);
    while watch.try_recv().is_ok() {}

    redis.restart();
    // Both nodes reconnect and resubscribe.
    assert!(a.cluster.synced(WAIT).await && b.cluster.synced(WAIT).await);
    let deadline = tokio::time::Instant::now() + WAIT;
    let new = loop {
        b.say(room, "after").await;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), watch.recv()).await {
            let frame = parse(m.as_text().expect("text"));
            if frame.0 == "after" {
                break frame.1;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message after restart"
        );
    };
    assert_ne!(
        new.epoch, old.epoch,
        "a Redis restart must change the epoch"
    );

    let (client, mut rx) = b.socket().await;
    let r = b
        .hub
        .join_room_since(&client, room, Some(old))
        .await
        .expect("join");
    assert!(!r.recovered, "old epoch: {r:?}");
    assert_eq!(r.replayed, 0);
    b.synced().await;
    a.say(room, "live").await;
    let (text, pos) = parse(&recv_text(&mut rx).await);
    assert_eq!(text, "live");
    assert_eq!(pos.epoch, new.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_ring_on_a_node_that_stopped_listening_is_not_trusted() {
    let redis = RedisServer::start();
    let a = HNode::start(&redis.url(), "a", 1_000).await;
    let b = HNode::start(&redis.url(), "b", 1_000).await;
    let room = "h:stale";
    let (_, mut watch) = a.member(room).await;
    let (left, mut rx) = b.member(room).await;
    a.synced().await;
    b.synced().await;
    a.say(room, "one").await;
    let (_, seen) = until(&mut rx, "one").await.pop().expect("one");
    until(&mut watch, "one").await;
    // b's last member leaves: b unsubscribes, its ring stops at "one".
    b.hub.leave_room(&left, room).await.expect("leave");
    b.synced().await;
    for i in 0..5 {
        a.say(room, &format!("m{i}")).await;
    }
    until(&mut watch, "m4").await;
    // A client with b's ring top comes back on b: the missed five come from Redis.
    let (client, mut rx2) = b.socket().await;
    let r = b
        .hub
        .join_room_since(&client, room, Some(seen))
        .await
        .expect("join");
    assert!(r.recovered, "{r:?}");
    assert_eq!(r.replayed, 5, "{r:?}");
    let mut texts = Vec::new();
    for _ in 0..5 {
        texts.push(parse(&recv_text(&mut rx2).await));
    }
    assert_consecutive(&texts, seen, "rejoined on b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_cache_is_reloaded_and_nothing_is_lost_or_doubled() {
    let redis = RedisServer::start();
    let a = HNode::start(&redis.url(), "a", 1_000).await;
    let room = "h:noscript";
    let (_, mut watch) = a.member(room).await;
    a.synced().await;
    a.say(room, "one").await;
    let (_, first) = until(&mut watch, "one").await.pop().expect("one");
    // Redis forgets its scripts without dropping the connection: the next EVALSHA gets
    // NOSCRIPT, the publisher loads the script again and re-sends that publish only.
    let mut conn = redis.client().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("SCRIPT FLUSH");
    a.say(room, "two").await;
    a.say(room, "three").await;
    let got = until(&mut watch, "three").await;
    assert_consecutive(&got, first, "after SCRIPT FLUSH");
    assert_eq!(got.len(), 2, "{got:?}");
    crate::assert_quiet(&mut watch).await;
    assert_eq!(a.cluster.stats().publish_failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_that_missed_messages_during_a_resubscribe_is_not_trusted() {
    let redis = RedisServer::start();
    let proxy = crate::freeze_proxy::FreezeProxy::start(redis.port).await;
    // a reaches Redis through a proxy that can stall its subscription silently.
    let a = HNode::start(&proxy.url(), "a", 1_000).await;
    let b = HNode::start(&redis.url(), "b", 1_000).await;
    let room = "h:resub";
    let (_, mut watch) = a.member(room).await;
    a.synced().await;
    b.say(room, "one").await;
    let (_, seen) = until(&mut watch, "one").await.pop().expect("one");
    // a's subscription stalls; b publishes meanwhile; a's probe finds the stall and rebuilds
    // the subscription: a's ring never saw "during" and still ends at "one".
    proxy.freeze_subscribers();
    b.say(room, "during").await;
    crate::eventually("the probe finds the stall", async || {
        a.cluster.stats().probe_stalls >= 1
    })
    .await;
    a.synced().await;
    // A client with the ring's top comes back on a. The ring is not trusted after a
    // resubscribe; it has a local member, so it cannot simply start over at Redis's top
    // (messages in flight to that member would be dropped), and nothing new arrives to show
    // where the live stream resumes: the answer is "not recovered" — never a "recovered"
    // that skips "during".
    let (client, mut rx) = a.socket().await;
    let r = a
        .hub
        .join_room_since(&client, room, Some(seen))
        .await
        .expect("join");
    assert!(
        !r.recovered,
        "a ring that missed a message was trusted: {r:?}"
    );
    assert!(r.joined);
    while rx.try_recv().is_ok() {}
    b.say(room, "after").await;
    assert_eq!(parse(&recv_text(&mut rx).await).0, "after", "joined live");
    // Once a message has shown the ring where the stream is, a rejoin on a recovers.
    let (_, pos) = until(&mut watch, "after").await.pop().expect("after");
    b.say(room, "later").await;
    until(&mut watch, "later").await;
    let (again, mut rx2) = a.socket().await;
    let r = a
        .hub
        .join_room_since(&again, room, Some(pos))
        .await
        .expect("join");
    assert!(r.recovered && r.replayed == 1, "{r:?}");
    assert_eq!(parse(&recv_text(&mut rx2).await).0, "later");
}
