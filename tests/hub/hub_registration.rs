//! register / unregister semantics.

use crate::support::{block_on, drain_texts, socket, user_socket};
use nucleus_stream::{CloseReason, SocketMessage, StreamError, StreamHub, TryRecvError};

#[test]
fn duplicate_id_is_refused_and_the_first_socket_keeps_working() {
    block_on(async {
        let hub = StreamHub::new();
        let (first, mut first_rx) = socket("dup");
        let (second, mut second_rx) = socket("dup");
        hub.register(first).await.unwrap();
        let err = hub.register(second).await.unwrap_err();
        assert!(
            matches!(err, StreamError::SocketExists(ref id) if id == "dup"),
            "{err:?}"
        );
        assert_eq!(hub.connection_count().await, 1);
        hub.send_to("dup", SocketMessage::text("x")).await.unwrap();
        assert_eq!(drain_texts(&mut first_rx), ["x"]);
        assert!(drain_texts(&mut second_rx).is_empty());
    });
}

#[test]
fn unregister_removes_from_every_room_and_user_and_closes_the_queue() {
    block_on(async {
        let hub = StreamHub::new();
        let (s, mut rx) = user_socket("s", "alice");
        let (other, _orx) = socket("o");
        hub.register(s.clone()).await.unwrap();
        hub.register(other.clone()).await.unwrap();
        for room in ["a", "b", "c"] {
            hub.join_room("s", room).await.unwrap();
        }
        hub.join_room("o", "b").await.unwrap();
        hub.send_to("s", SocketMessage::text("queued before"))
            .await
            .unwrap();

        let removed = hub.unregister("s").await.expect("was registered");
        assert_eq!(&*removed.id, "s");

        assert_eq!(
            hub.list_rooms().await,
            ["b"],
            "emptied rooms a and c disappear"
        );
        assert_eq!(hub.get_room_members("b").await, ["o"]);
        assert!(hub.get_socket_rooms("s").await.is_empty());
        assert!(!hub.is_user_online("alice").await);
        assert_eq!(hub.online_user_count().await, 0);
        assert_eq!(hub.connection_count().await, 1);
        let report = hub
            .send_to_user("alice", SocketMessage::text("y"))
            .await
            .unwrap();
        assert_eq!(report.total(), 0);
        assert!(matches!(
            hub.send_to("s", SocketMessage::text("z")).await,
            Err(StreamError::SocketNotFound(_))
        ));
        assert!(matches!(
            hub.join_room("s", "a").await,
            Err(StreamError::SocketNotFound(_))
        ));

        // What was queued before is still delivered, then the queue ends.
        assert_eq!(rx.close_reason(), Some(CloseReason::Unregistered));
        assert_eq!(rx.recv().await, Some(SocketMessage::text("queued before")));
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    });
}

#[test]
fn unregister_of_unknown_socket_is_none_and_counts_never_underflow() {
    block_on(async {
        let hub = StreamHub::new();
        assert!(hub.unregister("ghost").await.is_none());
        let (s, _rx) = user_socket("s", "u");
        hub.register(s).await.unwrap();
        assert!(hub.unregister("s").await.is_some());
        assert!(hub.unregister("s").await.is_none());
        assert_eq!(hub.connection_count().await, 0);
        assert_eq!(hub.online_user_count().await, 0);
        let stats = hub.stats();
        assert_eq!((stats.users_went_online, stats.users_went_offline), (1, 1));
    });
}

#[test]
fn an_id_can_be_registered_again_after_unregister() {
    block_on(async {
        let hub = StreamHub::new();
        let (s1, _rx1) = socket("s");
        hub.register(s1).await.unwrap();
        hub.join_room("s", "r").await.unwrap();
        hub.unregister("s").await;
        let (s2, mut rx2) = socket("s");
        hub.register(s2).await.unwrap();
        assert!(
            hub.get_socket_rooms("s").await.is_empty(),
            "rooms do not carry over"
        );
        hub.send_to("s", SocketMessage::text("new")).await.unwrap();
        assert_eq!(drain_texts(&mut rx2), ["new"]);
    });
}
