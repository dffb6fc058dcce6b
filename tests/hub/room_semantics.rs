//! join / leave / room listing semantics and room limits.

use crate::support::{block_on, drain_texts, socket};
use nucleus_stream::{HubConfig, SocketMessage, StreamError, StreamHub};

#[test]
fn join_of_unknown_socket_is_socket_not_found_and_creates_no_room() {
    block_on(async {
        let hub = StreamHub::new();
        let err = hub.join_room("nobody", "r").await.unwrap_err();
        assert!(matches!(err, StreamError::SocketNotFound(ref id) if id == "nobody"));
        assert!(hub.list_rooms().await.is_empty());
        let err = hub.leave_room("nobody", "r").await.unwrap_err();
        assert!(matches!(err, StreamError::SocketNotFound(_)));
    });
}

#[test]
fn join_of_a_socket_built_but_never_registered_is_socket_not_found() {
    block_on(async {
        let hub = StreamHub::new();
        let (s, _rx) = socket("unregistered");
        assert!(matches!(
            hub.join_room(&s.id, "r").await,
            Err(StreamError::SocketNotFound(_))
        ));
    });
}

#[test]
fn joining_twice_is_idempotent() {
    block_on(async {
        let hub = StreamHub::new();
        let (s, mut rx) = socket("s");
        hub.register(s).await.unwrap();
        assert!(!hub.is_in_room("s", "r").await);
        assert!(hub.join_room("s", "r").await.unwrap());
        assert!(!hub.join_room("s", "r").await.unwrap());
        assert!(hub.is_in_room("s", "r").await);
        assert!(!hub.is_in_room("s", "other").await);
        assert!(!hub.is_in_room("nobody", "r").await);
        assert_eq!(hub.get_room("r").await.unwrap().size(), 1);
        assert_eq!(hub.get_socket_rooms("s").await, ["r"]);
        let report = hub
            .broadcast_to_room("r", SocketMessage::text("once"))
            .await
            .unwrap();
        assert_eq!(report.queued, 1);
        assert_eq!(drain_texts(&mut rx), ["once"]);
        // One leave undoes it.
        assert!(hub.leave_room("s", "r").await.unwrap());
        assert!(!hub.leave_room("s", "r").await.unwrap());
        assert!(!hub.is_in_room("s", "r").await);
        assert!(hub.get_room("r").await.is_none());
    });
}

#[test]
fn an_emptied_room_disappears_and_can_be_created_again() {
    block_on(async {
        let hub = StreamHub::new();
        let (a, _ra) = socket("a");
        let (b, mut rb) = socket("b");
        hub.register(a).await.unwrap();
        hub.register(b).await.unwrap();
        hub.join_room("a", "r").await.unwrap();
        hub.join_room("b", "r").await.unwrap();
        hub.leave_room("a", "r").await.unwrap();
        assert_eq!(hub.list_rooms().await, ["r"]);
        hub.leave_room("b", "r").await.unwrap();
        assert!(hub.list_rooms().await.is_empty());
        assert!(hub.get_room("r").await.is_none());
        assert!(hub.get_room_members("r").await.is_empty());
        assert_eq!(hub.stats().rooms, 0);
        hub.join_room("b", "r").await.unwrap();
        assert_eq!(hub.get_room_members("r").await, ["b"]);
        hub.broadcast_to_room("r", SocketMessage::text("again"))
            .await
            .unwrap();
        assert_eq!(drain_texts(&mut rb), ["again"]);
    });
}

#[test]
fn room_name_limits_are_typed_errors() {
    block_on(async {
        let hub = StreamHub::with_config(HubConfig::default().max_room_name_len(8));
        let (s, _rx) = socket("s");
        hub.register(s).await.unwrap();
        assert!(matches!(
            hub.join_room("s", "").await,
            Err(StreamError::EmptyRoomName)
        ));
        let err = hub.join_room("s", "123456789").await.unwrap_err();
        assert!(
            matches!(err, StreamError::RoomNameTooLong { len: 9, max: 8 }),
            "{err:?}"
        );
        // Byte length, not characters: 3 × 3-byte chars = 9 bytes.
        assert!(matches!(
            hub.join_room("s", "€€€").await,
            Err(StreamError::RoomNameTooLong { len: 9, .. })
        ));
        assert!(hub.join_room("s", "12345678").await.unwrap());
        assert!(matches!(
            hub.broadcast_to_room("", SocketMessage::text("x")).await,
            Err(StreamError::EmptyRoomName)
        ));
        assert!(matches!(
            hub.leave_room("s", "123456789").await,
            Err(StreamError::RoomNameTooLong { .. })
        ));
        assert_eq!(hub.list_rooms().await, ["12345678"]);
    });
}

#[test]
fn defaults_are_documented_values() {
    let hub = StreamHub::new();
    assert_eq!(hub.config(), &HubConfig::default());
    let long = "x".repeat(129);
    block_on(async {
        let (s, _rx) = socket("s");
        hub.register(s).await.unwrap();
        assert!(hub.join_room("s", &long[..128]).await.is_ok());
        assert!(matches!(
            hub.join_room("s", &long).await,
            Err(StreamError::RoomNameTooLong { len: 129, max: 128 })
        ));
    });
}

#[test]
fn rooms_per_socket_limit_is_a_typed_error_and_leaves_state_unchanged() {
    block_on(async {
        let hub = StreamHub::with_config(HubConfig::default().max_rooms_per_socket(2));
        let (s, _rx) = socket("s");
        hub.register(s).await.unwrap();
        hub.join_room("s", "a").await.unwrap();
        hub.join_room("s", "b").await.unwrap();
        let err = hub.join_room("s", "c").await.unwrap_err();
        assert!(
            matches!(err, StreamError::TooManyRooms { ref socket, max: 2 } if socket == "s"),
            "{err:?}"
        );
        assert!(hub.get_room("c").await.is_none());
        // Re-joining a room it is in is still fine at the limit.
        assert!(!hub.join_room("s", "a").await.unwrap());
        hub.leave_room("s", "a").await.unwrap();
        assert!(hub.join_room("s", "c").await.unwrap());
        assert_eq!(
            crate::support::sorted(hub.get_socket_rooms("s").await),
            ["b", "c"]
        );
    });
}

#[test]
fn room_snapshot_does_not_change_after_it_is_taken() {
    block_on(async {
        let hub = StreamHub::new();
        let (a, _ra) = socket("a");
        let (b, _rb) = socket("b");
        hub.register(a).await.unwrap();
        hub.register(b).await.unwrap();
        hub.join_room("a", "r").await.unwrap();
        let snapshot = hub.get_room("r").await.unwrap();
        hub.join_room("b", "r").await.unwrap();
        hub.unregister("a").await;
        assert_eq!(snapshot.size(), 1);
        assert!(
            snapshot.contains("a"),
            "the snapshot keeps its (unregistered) member"
        );
        assert_eq!(
            hub.get_room("r")
                .await
                .unwrap()
                .members()
                .collect::<Vec<_>>(),
            ["b"]
        );
        drop(hub);
        // Still readable after the hub is gone.
        assert_eq!(snapshot.members().collect::<Vec<_>>(), ["a"]);
    });
}

#[test]
fn hub_config_readers_return_each_setting() {
    let c = HubConfig::default()
        .max_room_name_len(9)
        .max_rooms_per_socket(0)
        .shards(3);
    assert_eq!(c.room_name_limit(), 9);
    assert_eq!(c.rooms_per_socket_limit(), 1, "clamped to at least 1");
    assert_eq!(c.shard_count(), 3);
    let d = HubConfig::default();
    assert_eq!(
        (
            d.room_name_limit(),
            d.rooms_per_socket_limit(),
            d.shard_count()
        ),
        (128, 128, 256)
    );
}
