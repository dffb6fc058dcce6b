//! Cluster tests: several hubs in one process, joined through a real redis-server that each
//! test starts on a free loopback port (see `redis_server.rs`).

mod chat_nodes;
mod freeze_proxy;
mod history;
mod presence_events;
mod redis_server;

use std::time::Duration;

use nucleus_stream::cluster::{ClusterConfig, RedisCluster};
use nucleus_stream::{
    QueueConfig, Receiver, SocketMessage, StreamError, StreamHub, TryRecvError, WebSocket, channel,
};
use redis_server::RedisServer;

const WAIT: Duration = Duration::from_secs(10);

/// Short intervals so that faults resolve quickly.
fn config(url: &str, node: &str) -> ClusterConfig {
    ClusterConfig::new(url)
        .node_id(node)
        .heartbeat(Duration::from_millis(200))
        .node_ttl(Duration::from_millis(1000))
        .probe_interval(Duration::from_millis(200))
        .probe_timeout(Duration::from_millis(600))
        .command_timeout(Duration::from_millis(500))
        .reconnect_min(Duration::from_millis(20))
        .reconnect_max(Duration::from_millis(200))
}

struct Node {
    hub: StreamHub,
    cluster: Option<RedisCluster>,
}

impl Node {
    async fn start(url: &str, name: &str) -> Self {
        let hub = StreamHub::new();
        let cluster = RedisCluster::start(&hub, config(url, name)).expect("start cluster");
        assert!(cluster.ready(WAIT).await, "{name} did not connect");
        Self {
            hub,
            cluster: Some(cluster),
        }
    }

    fn cluster(&self) -> &RedisCluster {
        self.cluster.as_ref().expect("running")
    }

    /// Registers a socket under a node-aware id; returns the id and its receiver.
    async fn socket(&self, user: Option<&str>) -> (String, Receiver) {
        let (tx, rx) = channel(QueueConfig::default());
        let id = self.hub.next_socket_id();
        let socket = match user {
            Some(u) => WebSocket::authenticated(id.clone(), u, tx),
            None => WebSocket::new(id.clone(), tx),
        };
        self.hub.register(socket).await.expect("register");
        (id.to_string(), rx)
    }

    async fn member(&self, room: &str, user: Option<&str>) -> (String, Receiver) {
        let (id, rx) = self.socket(user).await;
        self.hub.join_room(&id, room).await.expect("join");
        (id, rx)
    }

    async fn synced(&self) {
        assert!(
            self.cluster().synced(WAIT).await,
            "subscriptions not applied"
        );
    }
}

async fn recv_text(rx: &mut Receiver) -> String {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(m)) => m.as_text().expect("text").to_string(),
        other => panic!("no message within {WAIT:?}: {other:?}"),
    }
}

/// Asserts nothing more arrives within a short while.
async fn assert_quiet(rx: &mut Receiver) {
    tokio::time::sleep(Duration::from_millis(150)).await;
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("unexpected: {other:?}"),
    }
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within {WAIT:?}: {what}");
}

/// Broadcasts `text` to room "r" from `from` (whose own member takes its copy from
/// `from_rx`) and says whether it reached the other node's member (`to_rx`) within 200 ms;
/// older copies of earlier tries are skipped.
async fn reaches(
    from: &StreamHub,
    from_rx: &mut Receiver,
    to_rx: &mut Receiver,
    text: &str,
) -> bool {
    from.broadcast_to_room("r", SocketMessage::text(text))
        .await
        .unwrap();
    let _ = from_rx.recv().await;
    loop {
        match tokio::time::timeout(Duration::from_millis(200), to_rx.recv()).await {
            Ok(Some(m)) if m.as_text() == Some(text) => return true,
            Ok(Some(_)) => continue,
            _ => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_split_across_nodes_gets_each_broadcast_exactly_once() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let c = Node::start(&redis.url(), "c").await;
    let (_, mut a1) = a.member("general", None).await;
    let (_, mut a2) = a.member("general", None).await;
    let (_, mut b1) = b.member("general", None).await;
    let (_, mut c_other) = c.member("elsewhere", None).await;
    for n in [&a, &b, &c] {
        n.synced().await;
    }

    let report = a
        .hub
        .broadcast_to_room("general", SocketMessage::text("from a"))
        .await
        .unwrap();
    assert_eq!(report.queued, 2, "the report counts local recipients");
    for rx in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(recv_text(rx).await, "from a");
    }
    // c has no member: it broadcasts into the room all the same.
    c.hub
        .broadcast_to_room("general", SocketMessage::text("from c"))
        .await
        .unwrap();
    for rx in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(recv_text(rx).await, "from c");
    }
    for rx in [&mut a1, &mut a2, &mut b1, &mut c_other] {
        assert_quiet(rx).await;
    }
    // c is not subscribed to "general" and received none of its traffic.
    assert_eq!(c.cluster().stats().subscribed_rooms, 1);
    assert_eq!(c.cluster().stats().received, 0);
    assert_eq!(b.cluster().stats().received, 2);
    assert_eq!(a.cluster().stats().received, 1);
    assert_eq!(a.cluster().stats().published, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_to_rooms_reaches_each_member_once_on_every_node() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let (_, mut sender) = a.member("x", None).await;
    // On b: one member of both listed rooms, one of y only, one of an unlisted room.
    let (both, mut both_rx) = b.member("x", None).await;
    b.hub.join_room(&both, "y").await.unwrap();
    let (_, mut y_only) = b.member("y", None).await;
    let (_, mut z_only) = b.member("z", None).await;
    for n in [&a, &b] {
        n.synced().await;
    }

    let report = a
        .hub
        .broadcast_to_rooms(["x", "y"], SocketMessage::text("once"), None)
        .await
        .unwrap();
    assert_eq!(report.queued, 1);
    assert_eq!(recv_text(&mut sender).await, "once");
    assert_eq!(recv_text(&mut both_rx).await, "once");
    assert_eq!(recv_text(&mut y_only).await, "once");
    // Excluding the member of both rooms, wherever it lives.
    a.hub
        .broadcast_to_rooms(["y", "x"], SocketMessage::text("not you"), Some(&both))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut sender).await, "not you");
    assert_eq!(recv_text(&mut y_only).await, "not you");
    // Then the next one comes in order, still once.
    a.hub
        .broadcast_to_rooms(["x", "y"], SocketMessage::text("again"), None)
        .await
        .unwrap();
    assert_eq!(recv_text(&mut both_rx).await, "again");
    assert_eq!(recv_text(&mut y_only).await, "again");
    assert_eq!(recv_text(&mut sender).await, "again");
    for rx in [&mut sender, &mut both_rx, &mut y_only, &mut z_only] {
        assert_quiet(rx).await;
    }
    // b got two copies of each (one per room channel) and delivered one.
    assert_eq!(b.cluster().stats().received, 3);
    assert_eq!(b.cluster().stats().gaps, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_one_node_to_a_room_arrive_in_order_without_gaps() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let (_, mut rx) = b.member("r", None).await;
    b.synced().await;
    for i in 0..2_000 {
        a.hub
            .broadcast_to_room("r", SocketMessage::text(i.to_string()))
            .await
            .unwrap();
    }
    for i in 0..2_000 {
        assert_eq!(recv_text(&mut rx).await, i.to_string());
    }
    let stats = b.cluster().stats();
    assert_eq!(
        (stats.received, stats.gaps, stats.bad_messages),
        (2_000, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn except_sender_is_excluded_wherever_it_lives() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let (a_id, mut a_rx) = a.member("r", None).await;
    let (b_id, mut b_rx) = b.member("r", None).await;
    let (_, mut b2_rx) = b.member("r", None).await;
    a.synced().await;
    b.synced().await;

    // The sender is local to the origin.
    a.hub
        .broadcast_to_room_except("r", SocketMessage::text("1"), &a_id)
        .await
        .unwrap();
    assert_eq!(recv_text(&mut b_rx).await, "1");
    assert_eq!(recv_text(&mut b2_rx).await, "1");
    // The excluded socket lives on the other node.
    a.hub
        .broadcast_to_room_except("r", SocketMessage::text("2"), &b_id)
        .await
        .unwrap();
    assert_eq!(recv_text(&mut a_rx).await, "2");
    assert_eq!(recv_text(&mut b2_rx).await, "2");
    assert_quiet(&mut a_rx).await;
    assert_quiet(&mut b_rx).await;
    assert_quiet(&mut b2_rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_user_and_global_messages_cross_nodes() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let (b_id, mut b_rx) = b.socket(None).await;
    let (_, mut alice_a) = a.socket(Some("alice")).await;
    let (_, mut alice_b) = b.socket(Some("alice")).await;
    eventually("a sees b's sockets", async || {
        a.hub.connection_count().await == 3
    })
    .await;

    a.hub
        .send_to(&b_id, SocketMessage::text("direct"))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut b_rx).await, "direct");

    a.hub
        .send_to_user("alice", SocketMessage::text("to alice"))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut alice_a).await, "to alice");
    assert_eq!(recv_text(&mut alice_b).await, "to alice");

    assert_eq!(a.hub.broadcast_all(SocketMessage::text("all")).await, 1);
    assert_eq!(recv_text(&mut alice_a).await, "all");
    assert_eq!(recv_text(&mut alice_b).await, "all");
    assert_eq!(recv_text(&mut b_rx).await, "all");

    // An id of no live node is not found, as on one node.
    assert!(matches!(
        a.hub.send_to("zz.1", SocketMessage::text("x")).await,
        Err(StreamError::SocketNotFound(_))
    ));
    assert_quiet(&mut alice_b).await;
    assert_quiet(&mut b_rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_cluster_wide() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let (alice_a, _rx1) = a.member("lobby", Some("alice")).await;
    let (_bob_b, _rx2) = b.member("lobby", Some("bob")).await;
    let (_alice_b, _rx3) = b.member("lobby", Some("alice")).await;
    eventually("a sees bob", async || a.hub.is_user_online("bob").await).await;
    eventually("presence settles", async || {
        a.hub.connection_count().await == 3 && b.hub.cluster_room_size("lobby").await == 3
    })
    .await;
    let mut users = a.hub.online_users().await;
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    assert_eq!(a.hub.online_user_count().await, 2);
    assert_eq!(a.hub.local_connection_count(), 1);
    assert_eq!(a.hub.get_room_members("lobby").await, [alice_a]);
    assert_eq!(a.hub.cluster_list_rooms().await, ["lobby"]);

    // bob leaves: offline everywhere.
    b.hub.unregister(&_bob_b).await;
    eventually("bob offline on a", async || {
        !a.hub.is_user_online("bob").await
    })
    .await;
    eventually("counts follow", async || {
        a.hub.connection_count().await == 2
    })
    .await;
    assert_eq!(a.hub.online_user_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_disappears_within_its_ttl_and_a_stopped_one_at_once() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let mut b = Node::start(&redis.url(), "b").await;
    let mut c = Node::start(&redis.url(), "c").await;
    let (_, _rb) = b.socket(Some("bob")).await;
    let (_, _rc) = c.socket(Some("carol")).await;
    eventually("a sees both", async || {
        a.hub.is_user_online("bob").await && a.hub.is_user_online("carol").await
    })
    .await;

    // Killed: no goodbye; the TTL (1 s here) makes it disappear.
    b.cluster.take().expect("b").abort();
    let killed = std::time::Instant::now();
    eventually("bob offline on a", async || {
        !a.hub.is_user_online("bob").await
    })
    .await;
    assert!(
        killed.elapsed() >= Duration::from_millis(500),
        "expiry came from the TTL, not a goodbye"
    );
    assert_eq!(a.cluster().stats().nodes_expired, 1);

    // Stopped gracefully: a goodbye, forgotten at once (well before the TTL).
    c.cluster.take().expect("c").shutdown().await;
    eventually("carol offline on a", async || {
        !a.hub.is_user_online("carol").await
    })
    .await;
    assert_eq!(a.cluster().stats().nodes_expired, 1, "c left by goodbye");
    assert_eq!(a.hub.connection_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_fails_fast_then_the_cluster_heals() {
    let mut redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let (_, mut a_rx) = a.member("r", Some("alice")).await;
    let (_, mut b_rx) = b.member("r", Some("bob")).await;
    a.synced().await;
    b.synced().await;
    eventually("a sees bob", async || a.hub.is_user_online("bob").await).await;
    a.hub
        .broadcast_to_room("r", SocketMessage::text("before"))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut a_rx).await, "before");
    assert_eq!(recv_text(&mut b_rx).await, "before");

    redis.kill();
    eventually("a notices", async || !a.cluster().is_connected()).await;
    // Local delivery goes on; the remote copies fail fast and are counted.
    let before = a.cluster().stats().publish_failed;
    for i in 0..10 {
        let report = a
            .hub
            .broadcast_to_room("r", SocketMessage::text(format!("down {i}")))
            .await
            .unwrap();
        assert_eq!(report.queued, 1);
        assert_eq!(recv_text(&mut a_rx).await, format!("down {i}"));
    }
    eventually("failures counted", async || {
        a.cluster().stats().publish_failed >= before + 10
    })
    .await;

    redis.restart();
    for n in [&a, &b] {
        assert!(n.cluster().ready(WAIT).await, "reconnected");
        n.synced().await;
    }
    eventually("presence re-announced", async || {
        a.hub.is_user_online("bob").await
    })
    .await;
    // Whole again: cross-node delivery both ways, each retried until the receiving node's
    // subscription is live (a's may go live after b's: one "back" sent before that is lost).
    eventually("a reaches b", async || {
        reaches(&a.hub, &mut a_rx, &mut b_rx, "up").await
    })
    .await;
    eventually("b reaches a", async || {
        reaches(&b.hub, &mut b_rx, &mut a_rx, "back").await
    })
    .await;
    assert!(a.cluster().stats().publisher_connects >= 2);
    assert!(b.cluster().stats().subscriber_connects >= 2);
    // The ten sent while Redis was down are known to b as lost (sequence gaps).
    assert!(
        b.cluster().stats().gaps >= 10,
        "gaps: {}",
        b.cluster().stats().gaps
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_stalled_subscription_is_found_by_the_probe_and_rebuilt() {
    let redis = RedisServer::start();
    let proxy = freeze_proxy::FreezeProxy::start(redis.port).await;
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&proxy.url(), "b").await;
    let (_, mut b_rx) = b.member("r", None).await;
    b.synced().await;
    a.hub
        .broadcast_to_room("r", SocketMessage::text("before"))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut b_rx).await, "before");

    proxy.freeze_subscribers();
    // No error reaches b; only the probe can tell.
    eventually("probe finds the stall", async || {
        b.cluster().stats().probe_stalls >= 1
    })
    .await;
    b.synced().await;
    eventually("b hears a again", async || {
        a.hub
            .broadcast_to_room("r", SocketMessage::text("after"))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_millis(200), b_rx.recv())
            .await
            .ok()
            .flatten()
            .is_some_and(|m| m.as_text() == Some("after"))
    })
    .await;
    assert!(b.cluster().stats().subscriber_connects >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_foreign_data_on_the_channels_is_dropped_and_counted() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let (_, mut b_rx) = b.member("r", None).await;
    b.synced().await;
    let mut conn = redis.client().await;
    let junk: [&[u8]; 5] = [
        b"hello",
        b"",
        b"NS\x02future version",
        b"NS\x01\x01\x00truncated",
        &[0xff; 300],
    ];
    for channel in [
        "nucleus:room:r",
        "nucleus:presence",
        "nucleus:node:b",
        "nucleus:all",
    ] {
        for j in junk {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(j)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    eventually("all counted", async || {
        b.cluster().stats().bad_messages == 20
    })
    .await;
    // Still working.
    a.hub
        .broadcast_to_room("r", SocketMessage::text("ok"))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut b_rx).await, "ok");
    assert_quiet(&mut b_rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_unsubscribes_after_its_last_local_member_leaves() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let (_, _a_rx) = a.member("r", None).await;
    let (b_id, _b_rx) = b.member("r", None).await;
    b.synced().await;
    assert_eq!(b.cluster().stats().subscribed_rooms, 1);
    b.hub.leave_room(&b_id, "r").await.unwrap();
    b.synced().await;
    assert_eq!(b.cluster().stats().subscribed_rooms, 0);
    let mut conn = redis.client().await;
    let subs: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("nucleus:room:r")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        subs,
        [("nucleus:room:r".to_string(), 1)],
        "only a is subscribed"
    );
    let before = b.cluster().stats().received;
    a.hub
        .broadcast_to_room("r", SocketMessage::text("x"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.cluster().stats().received, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_hub_cannot_join_two_clusters_and_bad_settings_are_refused() {
    let redis = RedisServer::start();
    let hub = StreamHub::new();
    let _c = RedisCluster::start(&hub, config(&redis.url(), "a")).expect("first");
    assert!(RedisCluster::start(&hub, config(&redis.url(), "b")).is_err());
    assert!(RedisCluster::start(&StreamHub::new(), config(&redis.url(), "a.b")).is_err());
    assert!(RedisCluster::start(&StreamHub::new(), config("nonsense://", "x")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cluster_publishes_only_heartbeats_and_probes() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let c = Node::start(&redis.url(), "c").await;
    let (_, _rx) = a.socket(Some("alice")).await;
    eventually("settled", async || c.hub.is_user_online("alice").await).await;
    let mut conn = redis.client().await;
    let calls = async |conn: &mut redis::aio::MultiplexedConnection| -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(conn)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let before = calls(&mut conn).await;
    let start = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let published = calls(&mut conn).await - before;
    // Per node: one heartbeat and one probe per 200 ms; allow for timer slack and the
    // measured window being longer than asked.
    let periods = (start.elapsed().as_millis() / 200 + 2) as u64;
    assert!(
        published <= 3 * 2 * periods,
        "{published} PUBLISH calls in an idle {:?}: an announcement loop?",
        start.elapsed()
    );
    drop((a, b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_never_blocks_a_broadcast_and_the_backlog_stays_bounded() {
    let redis = RedisServer::start();
    let proxy = freeze_proxy::FreezeProxy::start(redis.port).await;
    let a = Node::start(&redis.url(), "a").await;
    let hub = StreamHub::new();
    let cluster = RedisCluster::start(&hub, config(&proxy.url(), "b").backlog(16)).expect("b");
    assert!(cluster.ready(WAIT).await);
    let b = Node {
        hub,
        cluster: Some(cluster),
    };
    let (_, mut a_rx) = a.member("r", None).await;
    let (_, mut b_rx) = b.member("r", None).await;
    a.synced().await;
    b.synced().await;

    // Redis stops answering b (no error, no close): b's publisher waits on its pipeline, the
    // backlog fills, and every further remote copy is refused at once and counted.
    let published_before = b.cluster().stats().published;
    proxy.freeze_all();
    for i in 0..2_000 {
        let report = b
            .hub
            .broadcast_to_room("r", SocketMessage::text(i.to_string()))
            .await
            .unwrap();
        assert_eq!(report.queued, 1);
    }
    for i in 0..2_000 {
        assert_eq!(
            recv_text(&mut b_rx).await,
            i.to_string(),
            "local delivery unaffected"
        );
    }
    let stats = b.cluster().stats();
    assert!(
        stats.backlog_full >= 2_000 - 16 - 512 - 1,
        "refused: {}",
        stats.backlog_full
    );
    // The stuck pipeline times out; the publisher reconnects (a new, unfrozen connection) and
    // the probe rebuilds the frozen subscription.
    eventually("b publishes again", async || {
        b.hub
            .broadcast_to_room("r", SocketMessage::text("again"))
            .await
            .unwrap();
        let _ = b_rx.recv().await;
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), a_rx.recv()).await
        {
            if m.as_text() == Some("again") {
                return true;
            }
        }
        false
    })
    .await;
    let stats = b.cluster().stats();
    // Every one of the 2,000 is accounted for: refused at the backlog, lost with the stuck
    // pipeline (if the batch it was stuck on held them: it may have been a heartbeat), or
    // published after the reconnect (with the `again`s).
    assert!(
        stats.published - published_before + stats.publish_failed + stats.backlog_full >= 2_000,
        "unaccounted broadcasts: {stats:?}"
    );
    assert!(stats.publisher_connects >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_members_cluster_wide_asks_only_the_nodes_with_members() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let c = Node::start(&redis.url(), "c").await;
    let (a1, _r1) = a.member("lobby", None).await;
    let (b1, _r2) = b.member("lobby", None).await;
    let (b2, _r3) = b.member("lobby", None).await;
    let (_, _r4) = c.member("other", None).await;
    for n in [&a, &b, &c] {
        n.synced().await;
    }
    eventually("a knows b's members", async || {
        a.hub.cluster_room_size("lobby").await == 3
    })
    .await;
    let answer = a.cluster().room_members("lobby", WAIT).await;
    let mut got = answer.members.clone();
    got.sort();
    let mut want = vec![a1.clone(), b1, b2];
    want.sort();
    assert_eq!(got, want);
    assert!(answer.unanswered.is_empty());
    // The local form stays local.
    assert_eq!(a.hub.get_room_members("lobby").await, [a1]);
    // A room nobody else has: answered locally at once.
    assert!(
        a.cluster()
            .room_members("nowhere", WAIT)
            .await
            .members
            .is_empty()
    );
}
