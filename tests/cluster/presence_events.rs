//! Presence events in a cluster: `Online` on a user's first device anywhere and `Offline`
//! after its last, `Joined` on a member's first device anywhere in a room and `Left` after
//! its last, once on every node's event stream — including those of a node that died (its
//! presence TTL ran out) for the users and members it alone held.

use std::collections::BTreeMap;
use std::time::Duration;

use nucleus_stream::{PresenceEvent, PresenceSubscription};

use crate::redis_server::RedisServer;
use crate::{Node, eventually};

/// Everything buffered, without waiting.
fn drain(sub: &mut PresenceSubscription) -> Vec<PresenceEvent> {
    let mut out = Vec::new();
    while let Some(event) = sub.try_recv().expect("no lag in these tests") {
        out.push(event);
    }
    out
}

/// The online/offline events per user, in order ("+" online, "-" offline).
fn per_user(events: &[PresenceEvent]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for event in events {
        match event {
            PresenceEvent::Online { user } => out.entry(user.to_string()).or_default().push('+'),
            PresenceEvent::Offline { user } => out.entry(user.to_string()).or_default().push('-'),
            _ => {}
        }
    }
    out
}

/// The joined/left events per "room/member", in order ("+" joined, "-" left).
fn per_member(events: &[PresenceEvent]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for event in events {
        let (room, member, sign) = match event {
            PresenceEvent::Joined { room, member } => (room, member, '+'),
            PresenceEvent::Left { room, member } => (room, member, '-'),
            _ => continue,
        };
        out.entry(format!("{room}/{member}"))
            .or_default()
            .push(sign);
    }
    out
}

/// Waits until every node counts `n` members in `room` cluster-wide (each has applied the
/// others' room presence: the member pairs travel with the counts).
async fn room_settled(nodes: &[&Node], room: &str, n: usize) {
    eventually(&format!("{n} members of {room} everywhere"), async || {
        for node in nodes {
            if node.hub.cluster_room_size(room).await != n {
                return false;
            }
        }
        true
    })
    .await;
}

fn one(key: &str, signs: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(key.to_string(), signs.to_string())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_and_left_fire_once_per_node_on_a_members_first_and_last_device_anywhere() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let c = Node::start(&redis.url(), "c").await;
    let nodes = [&a, &b, &c];
    settled(&nodes, 0).await;
    let mut subs: Vec<_> = nodes.iter().map(|n| n.hub.subscribe_presence()).collect();

    // alice's phone on a joins R; then her laptop on b; then the phone leaves R.
    let (phone, _rx1) = a.member("R", Some("alice")).await;
    room_settled(&nodes, "R", 1).await;
    let (laptop, _rx2) = b.member("R", Some("alice")).await;
    room_settled(&nodes, "R", 2).await;
    a.hub.leave_room(&phone, "R").await.unwrap();
    room_settled(&nodes, "R", 1).await;
    for (node, sub) in nodes.iter().zip(&mut subs) {
        assert_eq!(
            per_member(&drain(sub)),
            one("R/alice", "+"),
            "node {}: one Joined, no Left while a device is in R",
            node.cluster().node_id()
        );
    }

    // An anonymous socket on b joins too; then the laptop leaves R.
    let (anon, _rx3) = b.member("R", None).await;
    room_settled(&nodes, "R", 2).await;
    b.hub.leave_room(&laptop, "R").await.unwrap();
    room_settled(&nodes, "R", 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    for (node, sub) in nodes.iter().zip(&mut subs) {
        let mut want = one("R/alice", "-");
        want.insert(format!("R/{anon}"), "+".to_string());
        assert_eq!(
            per_member(&drain(sub)),
            want,
            "node {}: alice left R once, the anonymous socket joined once",
            node.cluster().node_id()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_takes_out_of_its_rooms_only_the_members_it_alone_held() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let mut b = Node::start(&redis.url(), "b").await;
    settled(&[&a, &b], 0).await;
    let mut events = a.hub.subscribe_presence();
    let (_bob, _rx1) = b.member("R", Some("bob")).await;
    let (_carol_b, _rx2) = b.member("R", Some("carol")).await;
    let (_carol_a, _rx3) = a.member("R", Some("carol")).await;
    room_settled(&[&a, &b], "R", 3).await;

    b.cluster.take().expect("b").abort();
    eventually("a forgets b", async || {
        a.hub.cluster_room_size("R").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = per_member(&drain(&mut events));
    assert_eq!(
        seen["R/bob"], "+-",
        "bob, in R only through b, left with it"
    );
    assert_eq!(seen["R/carol"], "+", "carol is still in R through a");
}

/// Waits until every node counts `n` connections cluster-wide (so each has applied the
/// others' presence: a delta carries the users with the connection count).
async fn settled(nodes: &[&Node], n: usize) {
    eventually(&format!("{n} connections everywhere"), async || {
        for node in nodes {
            if node.hub.connection_count().await != n {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_and_offline_fire_once_per_node_on_the_cluster_wide_transition() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let b = Node::start(&redis.url(), "b").await;
    let c = Node::start(&redis.url(), "c").await;
    let nodes = [&a, &b, &c];
    settled(&nodes, 0).await;
    let mut subs: Vec<_> = nodes.iter().map(|n| n.hub.subscribe_presence()).collect();

    // alice's phone on a: online everywhere.
    let (phone, _rx1) = a.socket(Some("alice")).await;
    settled(&nodes, 1).await;
    // Her laptop on b, then the phone goes: she never stopped being online.
    let (laptop, _rx2) = b.socket(Some("alice")).await;
    settled(&nodes, 2).await;
    a.hub.unregister(&phone).await;
    settled(&nodes, 1).await;
    for (node, sub) in nodes.iter().zip(&mut subs) {
        assert_eq!(
            per_user(&drain(sub)),
            BTreeMap::from([("alice".to_string(), "+".to_string())]),
            "node {}: one Online, no Offline while a device is left",
            node.cluster().node_id()
        );
        assert!(node.hub.is_user_online("alice").await);
    }

    // The laptop goes too: offline everywhere.
    b.hub.unregister(&laptop).await;
    settled(&nodes, 0).await;
    // A few heartbeats (full states) later nothing more has come: exactly once.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for (node, sub) in nodes.iter().zip(&mut subs) {
        assert_eq!(
            per_user(&drain(sub)),
            BTreeMap::from([("alice".to_string(), "-".to_string())]),
            "node {}: one Offline after the last device",
            node.cluster().node_id()
        );
        assert!(!node.hub.is_user_online("alice").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_takes_offline_only_the_users_it_alone_held() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "a").await;
    let mut b = Node::start(&redis.url(), "b").await;
    settled(&[&a, &b], 0).await;
    let mut events = a.hub.subscribe_presence();
    let (_bob, _rx1) = b.socket(Some("bob")).await;
    let (_carol_b, _rx2) = b.socket(Some("carol")).await;
    let (carol_a, _rx3) = a.socket(Some("carol")).await;
    settled(&[&a, &b], 3).await;

    // b dies without a goodbye: after its TTL (1 s here) a forgets it.
    b.cluster.take().expect("b").abort();
    eventually("a forgets b", async || a.hub.connection_count().await == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = per_user(&drain(&mut events));
    assert_eq!(seen["bob"], "+-", "bob, only on b, went offline with it");
    assert_eq!(seen["carol"], "+", "carol is still connected to a");
    assert!(a.hub.is_user_online("carol").await);

    a.hub.unregister(&carol_a).await;
    assert_eq!(per_user(&drain(&mut events))["carol"], "-");
}
