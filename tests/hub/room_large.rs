//! Rooms past one chunk: joins and leaves in any order keep the membership exact.

use std::collections::BTreeSet;

use crate::support::{block_on, drain, register_many};
use nucleus_stream::{SocketMessage, StreamHub};

#[test]
fn membership_stays_exact_through_interleaved_joins_and_leaves_across_chunks() {
    block_on(async {
        let hub = StreamHub::new();
        let n = 2_500; // several chunks
        let mut rxs = register_many(&hub, "s", n).await;
        let mut expected = BTreeSet::new();
        for i in 0..n {
            assert!(hub.join_room(&format!("s{i}"), "big").await.unwrap());
            expected.insert(i);
        }
        // Leave in a scattered order (first, last, middles) so swap-removal crosses chunks.
        let mut x: u64 = 12345;
        for _ in 0..1_200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (x >> 33) as usize % n;
            let was = expected.remove(&i);
            assert_eq!(hub.leave_room(&format!("s{i}"), "big").await.unwrap(), was);
        }
        let members: BTreeSet<usize> = hub
            .get_room_members("big")
            .await
            .iter()
            .map(|id| id[1..].parse().unwrap())
            .collect();
        assert_eq!(members, expected);
        assert_eq!(hub.get_room("big").await.unwrap().size(), expected.len());

        let report = hub
            .broadcast_to_room("big", SocketMessage::text("x"))
            .await
            .unwrap();
        assert_eq!(report.queued, expected.len());
        for (i, rx) in rxs.iter_mut().enumerate() {
            let got = drain(rx).len();
            assert_eq!(got, usize::from(expected.contains(&i)), "socket s{i}");
        }

        // Rejoin some, leave all: the room disappears.
        for i in 0..n {
            hub.join_room(&format!("s{i}"), "big").await.unwrap();
        }
        assert_eq!(hub.get_room("big").await.unwrap().size(), n);
        for i in (0..n).rev() {
            assert!(hub.leave_room(&format!("s{i}"), "big").await.unwrap());
        }
        assert!(hub.get_room("big").await.is_none());
        assert!(hub.list_rooms().await.is_empty());
    });
}
