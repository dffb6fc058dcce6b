//! Threads registering, joining, leaving, broadcasting and unregistering at once; the hub's
//! invariants are checked when they are done.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::thread;

use crate::support::{block_on, drain_texts};
use nucleus_stream::{QueueConfig, Receiver, SocketMessage, StreamHub, WebSocket, channel};

const ROOMS: usize = 4;
const STABLE_PER_ROOM: usize = 3;
const BROADCASTERS: usize = 2;
const MESSAGES_PER_BROADCASTER: usize = 1_500;
const CHURN_THREADS: usize = 2;
const CHURN_ROUNDS: usize = 1_000;
const RACES: usize = 1_000;

fn room(i: usize) -> String {
    format!("room-{i}")
}

fn big_queue() -> QueueConfig {
    QueueConfig::default()
        .max_messages(1 << 20)
        .max_bytes(1 << 30)
}

/// A tiny deterministic generator per thread.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize % n
    }
}

#[test]
fn concurrent_membership_and_broadcast_keep_every_invariant() {
    let hub = StreamHub::new();

    // Stable members: in one room for the whole test, with a user each (two sockets per user).
    let mut stable: Vec<(String, usize, Receiver)> = Vec::new();
    block_on(async {
        for r in 0..ROOMS {
            for k in 0..STABLE_PER_ROOM {
                let id = format!("stable-{r}-{k}");
                let (tx, rx) = channel(big_queue());
                let user = format!("stable-user-{r}-{}", k / 2);
                hub.register(WebSocket::authenticated(id.as_str(), user, tx))
                    .await
                    .unwrap();
                hub.join_room(&id, &room(r)).await.unwrap();
                stable.push((id, r, rx));
            }
        }
    });

    let mut handles = Vec::new();

    // Broadcasters: each records, per room, what it sent (in order).
    for t in 0..BROADCASTERS {
        let hub = hub.clone();
        handles.push(thread::spawn(move || {
            let mut rng = Lcg(t as u64 + 1);
            let mut sent: Vec<Vec<String>> = vec![Vec::new(); ROOMS];
            block_on(async {
                for k in 0..MESSAGES_PER_BROADCASTER {
                    let r = rng.next(ROOMS);
                    let text = format!("b{t}-{k}");
                    hub.broadcast_to_room(&room(r), SocketMessage::text(text.as_str()))
                        .await
                        .unwrap();
                    sent[r].push(text);
                }
            });
            (sent, Vec::new())
        }));
    }

    // Churners: register, join some rooms, leave some, unregister. They return, per socket,
    // the rooms it ever joined and everything it received.
    for t in 0..CHURN_THREADS {
        let hub = hub.clone();
        handles.push(thread::spawn(move || {
            let mut rng = Lcg(100 + t as u64);
            let mut seen = Vec::new();
            block_on(async {
                for k in 0..CHURN_ROUNDS {
                    let id = format!("churn-{t}-{k}");
                    let (tx, mut rx) = channel(big_queue());
                    let user = format!("churn-user-{}", rng.next(5));
                    hub.register(WebSocket::authenticated(id.as_str(), user, tx))
                        .await
                        .unwrap();
                    let mut joined = HashSet::new();
                    for _ in 0..1 + rng.next(3) {
                        let r = rng.next(ROOMS);
                        hub.join_room(&id, &room(r)).await.unwrap();
                        joined.insert(r);
                    }
                    let r = rng.next(ROOMS);
                    let was_member = joined.contains(&r);
                    assert_eq!(hub.leave_room(&id, &room(r)).await.unwrap(), was_member);
                    // A private room of its own, created and emptied every round.
                    let own = format!("own-{t}");
                    hub.join_room(&id, &own).await.unwrap();
                    hub.leave_room(&id, &own).await.unwrap();
                    hub.unregister(&id).await.expect("registered");
                    let got = drain_texts(&mut rx);
                    seen.push((joined, got));
                }
            });
            (Vec::new(), seen)
        }));
    }

    // Racers: one thread registers sockets and immediately joins them to rooms while another
    // unregisters them as soon as it hears of them.
    let (tx_ids, rx_ids) = mpsc::channel::<String>();
    {
        let hub = hub.clone();
        handles.push(thread::spawn(move || {
            block_on(async {
                for k in 0..RACES {
                    let id = format!("race-{k}");
                    let (tx, rx) = channel(big_queue());
                    hub.register(WebSocket::authenticated(id.as_str(), "racer", tx))
                        .await
                        .unwrap();
                    tx_ids.send(id.clone()).unwrap();
                    for r in 0..ROOMS {
                        // Either joins before the unregister (and is removed by it) or
                        // fails with SocketNotFound after it.
                        let _ = hub.join_room(&id, &room(r)).await;
                    }
                    drop(rx);
                }
            });
            (Vec::new(), Vec::new())
        }));
    }
    {
        let hub = hub.clone();
        handles.push(thread::spawn(move || {
            block_on(async {
                for id in rx_ids {
                    hub.unregister(&id).await;
                }
            });
            (Vec::new(), Vec::new())
        }));
    }

    let mut sent_per_room: Vec<Vec<Vec<String>>> = vec![Vec::new(); ROOMS];
    let mut churn_seen = Vec::new();
    for h in handles {
        let (sent, seen) = h.join().expect("thread panicked");
        for (r, msgs) in sent.into_iter().enumerate() {
            sent_per_room[r].push(msgs);
        }
        churn_seen.extend(seen);
    }

    block_on(async {
        // Membership: exactly the stable members remain, rooms are exactly the stable rooms.
        let mut rooms = hub.list_rooms().await;
        rooms.sort();
        assert_eq!(rooms, (0..ROOMS).map(room).collect::<Vec<_>>());
        for r in 0..ROOMS {
            let mut members = hub.get_room_members(&room(r)).await;
            members.sort();
            let expected: Vec<String> = (0..STABLE_PER_ROOM)
                .map(|k| format!("stable-{r}-{k}"))
                .collect();
            assert_eq!(members, expected, "room {r} holds a member that left");
        }
        assert_eq!(hub.connection_count().await, ROOMS * STABLE_PER_ROOM);
        assert!(!hub.is_user_online("racer").await);
        for u in 0..5 {
            assert!(!hub.is_user_online(&format!("churn-user-{u}")).await);
        }
        let stable_users = ROOMS * STABLE_PER_ROOM.div_ceil(2);
        assert_eq!(hub.online_user_count().await, stable_users);
        let stats = hub.stats();
        assert_eq!(
            stats.users_went_online - stats.users_went_offline,
            stable_users as u64
        );
    });

    // Delivery: every stable member got every message sent to its room exactly once, and
    // each broadcaster's messages in the order it sent them.
    for (id, r, rx) in &mut stable {
        let got = drain_texts(rx);
        let mut expected: Vec<String> = sent_per_room[*r].iter().flatten().cloned().collect();
        let mut sorted_got = got.clone();
        sorted_got.sort();
        expected.sort();
        assert_eq!(sorted_got, expected, "{id}: lost or duplicated messages");
        for t in 0..BROADCASTERS {
            let prefix = format!("b{t}-");
            let from_t: Vec<&String> = got.iter().filter(|m| m.starts_with(&prefix)).collect();
            let sent_t: Vec<&String> = sent_per_room[*r]
                .iter()
                .flatten()
                .filter(|m| m.starts_with(&prefix))
                .collect();
            assert_eq!(from_t, sent_t, "{id}: broadcaster {t} out of order");
        }
    }

    // Churners: never a duplicate, never a message of a room they never joined.
    let room_of: HashMap<String, usize> = sent_per_room
        .iter()
        .enumerate()
        .flat_map(|(r, per_thread)| per_thread.iter().flatten().map(move |m| (m.clone(), r)))
        .collect();
    for (joined, got) in churn_seen {
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "duplicate delivery");
        for m in &got {
            assert!(joined.contains(&room_of[m]), "{m} from a room never joined");
        }
    }
}
