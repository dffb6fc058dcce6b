//! Users with several sockets (devices): presence counts and send_to_user.

use crate::support::{block_on, drain_texts, socket, user_socket};
use nucleus_stream::{SocketMessage, StreamHub};

#[test]
fn send_to_user_reaches_every_device_and_says_how_many() {
    block_on(async {
        let hub = StreamHub::new();
        let (phone, mut phone_rx) = user_socket("phone", "alice");
        let (laptop, mut laptop_rx) = user_socket("laptop", "alice");
        let (bob, mut bob_rx) = user_socket("bob-1", "bob");
        for s in [phone, laptop, bob] {
            hub.register(s).await.unwrap();
        }
        let report = hub
            .send_to_user("alice", SocketMessage::text("ping"))
            .await
            .unwrap();
        assert_eq!(report.queued, 2);
        assert_eq!(drain_texts(&mut phone_rx), ["ping"]);
        assert_eq!(drain_texts(&mut laptop_rx), ["ping"]);
        assert!(drain_texts(&mut bob_rx).is_empty());

        hub.unregister("phone").await;
        let report = hub
            .send_to_user("alice", SocketMessage::text("again"))
            .await
            .unwrap();
        assert_eq!(report.queued, 1);
        assert_eq!(drain_texts(&mut laptop_rx), ["again"]);
        let report = hub
            .send_to_user("nobody", SocketMessage::text("x"))
            .await
            .unwrap();
        assert_eq!(report.total(), 0);
    });
}

#[test]
fn presence_is_exact_with_multi_device_users() {
    block_on(async {
        let hub = StreamHub::new();
        let (a1, _r1) = user_socket("a1", "alice");
        let (a2, _r2) = user_socket("a2", "alice");
        let (b1, _r3) = user_socket("b1", "bob");
        let (anon, _r4) = socket("anon");
        hub.register(a1).await.unwrap();
        assert_eq!(hub.online_user_count().await, 1);
        hub.register(a2).await.unwrap();
        assert_eq!(hub.online_user_count().await, 1, "second device, same user");
        hub.register(b1).await.unwrap();
        hub.register(anon).await.unwrap();
        assert_eq!(hub.online_user_count().await, 2);
        assert_eq!(hub.connection_count().await, 4);
        assert_eq!(
            crate::support::sorted(hub.online_users().await),
            ["alice", "bob"]
        );

        hub.unregister("a1").await;
        assert!(hub.is_user_online("alice").await, "one device left");
        assert_eq!(hub.online_user_count().await, 2);
        hub.unregister("a2").await;
        assert!(!hub.is_user_online("alice").await);
        assert_eq!(hub.online_user_count().await, 1);
        // Unregistering again changes nothing and never underflows.
        hub.unregister("a2").await;
        hub.unregister("a1").await;
        assert_eq!(hub.online_user_count().await, 1);
        hub.unregister("b1").await;
        hub.unregister("anon").await;
        assert_eq!(hub.online_user_count().await, 0);
        assert_eq!(hub.connection_count().await, 0);
        assert!(hub.online_users().await.is_empty());
        let stats = hub.stats();
        assert_eq!(stats.users_went_online, 2);
        assert_eq!(stats.users_went_offline, 2);
    });
}

#[test]
fn a_refused_duplicate_registration_does_not_count_as_a_device() {
    block_on(async {
        let hub = StreamHub::new();
        let (a, _r1) = user_socket("dup", "alice");
        let (b, _r2) = user_socket("dup", "alice");
        hub.register(a).await.unwrap();
        assert!(hub.register(b).await.is_err());
        let report = hub
            .send_to_user("alice", SocketMessage::text("x"))
            .await
            .unwrap();
        assert_eq!(report.queued, 1);
        hub.unregister("dup").await;
        assert!(!hub.is_user_online("alice").await);
    });
}
