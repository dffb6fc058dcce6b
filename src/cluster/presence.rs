//! Cluster presence: what this node announces about itself, and its replica of the others.
//!
//! Each node announces on the presence channel, inside a [`Kind::Presence`] envelope:
//!
//! - a **full state** every heartbeat (its connection count, its users with their device
//!   counts, its rooms with their member counts, and the TTL after which the others must
//!   forget it), and right after (re)subscribing;
//! - **deltas** as its users and rooms change, coalesced over a few milliseconds, carrying
//!   *absolute* counts (0 = gone), so applying one twice or after a lost one never corrupts
//!   the replica — the next full state heals anything missed;
//! - **hello** after (re)subscribing, asking every other node for its full state now;
//! - **goodbye** on a graceful shutdown.
//!
//! Payload (after the envelope header), big-endian:
//!
//! ```text
//! 1  op: 1 full, 2 delta, 3 hello, 4 goodbye
//! -- full and delta only:
//! 4  ttl in ms
//! 4  connections
//! 4  n users, then n × (u16 len, user, u32 devices)
//! 4  n rooms, then n × (u16 len, room, u32 members)
//! 4  n room members, then n × (u8 flags, u16 len, room, u16 len, key): who is in which
//!    room, per presence key (flags bit0: the key is an anonymous socket id, not a user id;
//!    bit1: present — a delta lists changed pairs with bit1 clear for gone, a full state
//!    lists every pair present). A payload that ends after the rooms has no member list.
//! ```
//!
//! The member list is what makes room `Joined` / `Left` cluster-wide (`events.rs`): a full
//! state carries every (room, member) pair of the node, so its size grows with the node's
//! memberships (about 25 bytes each).
//!
//! A node whose last full state or delta is older than its TTL is dropped from the replica:
//! that is how a node that died without a goodbye disappears.

use std::collections::{HashMap, HashSet};
use std::sync::Arc as StrArc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};

use super::envelope::{DecodeError, Reader};
use crate::presence_events::PresenceKey;

/// A room and one of its members (user, or anonymous socket).
pub(crate) type RoomMember = (StrArc<str>, PresenceKey);

const MEMBER_SOCKET: u8 = 1;
const MEMBER_PRESENT: u8 = 2;

pub(crate) const OP_FULL: u8 = 1;
pub(crate) const OP_DELTA: u8 = 2;
pub(crate) const OP_HELLO: u8 = 3;
pub(crate) const OP_GOODBYE: u8 = 4;

/// A full state or delta, owned.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) ttl_ms: u32,
    pub(crate) connections: u32,
    pub(crate) users: Vec<(String, u32)>,
    pub(crate) rooms: Vec<(String, u32)>,
    /// (room, member) pairs and whether present (a full state lists present ones only).
    pub(crate) members: Vec<(RoomMember, bool)>,
}

pub(crate) fn encode_state(op: u8, state: &State) -> BytesMut {
    let mut b = BytesMut::with_capacity(
        13 + state.users.iter().map(|(u, _)| u.len() + 6).sum::<usize>()
            + state.rooms.iter().map(|(r, _)| r.len() + 6).sum::<usize>(),
    );
    b.put_u8(op);
    b.put_u32(state.ttl_ms);
    b.put_u32(state.connections);
    for list in [&state.users, &state.rooms] {
        let list: Vec<_> = list
            .iter()
            .filter(|(k, _)| k.len() <= u16::MAX as usize)
            .collect();
        b.put_u32(list.len() as u32);
        for (k, n) in list {
            b.put_u16(k.len() as u16);
            b.put_slice(k.as_bytes());
            b.put_u32(*n);
        }
    }
    let members: Vec<_> = state
        .members
        .iter()
        .filter(|((room, key), _)| {
            room.len() <= u16::MAX as usize && key.as_str().len() <= u16::MAX as usize
        })
        .collect();
    b.put_u32(members.len() as u32);
    for ((room, key), present) in members {
        let mut flags = 0;
        if !key.is_user() {
            flags |= MEMBER_SOCKET;
        }
        if *present {
            flags |= MEMBER_PRESENT;
        }
        b.put_u8(flags);
        b.put_u16(room.len() as u16);
        b.put_slice(room.as_bytes());
        b.put_u16(key.as_str().len() as u16);
        b.put_slice(key.as_str().as_bytes());
    }
    b
}

pub(crate) enum Announcement {
    Full(State),
    Delta(State),
    Hello,
    Goodbye,
}

pub(crate) fn decode(payload: &[u8]) -> Result<Announcement, DecodeError> {
    let mut r = Reader::new(payload);
    let op = r.u8()?;
    match op {
        OP_HELLO => return Ok(Announcement::Hello),
        OP_GOODBYE => return Ok(Announcement::Goodbye),
        OP_FULL | OP_DELTA => {}
        _ => return Err(DecodeError::Malformed),
    }
    let ttl_ms = r.u32()?;
    let connections = r.u32()?;
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        let n = r.u32()? as usize;
        // Each entry takes at least 6 bytes: a count beyond what is left is malformed (and
        // must not become a huge allocation).
        if n > payload.len() / 6 {
            return Err(DecodeError::Malformed);
        }
        list.reserve(n);
        for _ in 0..n {
            let len = r.u16()? as usize;
            let key = r.str(len)?.to_string();
            list.push((key, r.u32()?));
        }
    }
    let mut members = Vec::new();
    if !r.is_empty() {
        let n = r.u32()? as usize;
        // Each entry takes at least 5 bytes.
        if n > payload.len() / 5 {
            return Err(DecodeError::Malformed);
        }
        members.reserve(n);
        for _ in 0..n {
            let flags = r.u8()?;
            let len = r.u16()? as usize;
            let room = StrArc::from(r.str(len)?);
            let len = r.u16()? as usize;
            let id = StrArc::from(r.str(len)?);
            let key = if flags & MEMBER_SOCKET != 0 {
                PresenceKey::Socket(id)
            } else {
                PresenceKey::User(id)
            };
            members.push(((room, key), flags & MEMBER_PRESENT != 0));
        }
    }
    if !r.is_empty() {
        return Err(DecodeError::Malformed);
    }
    let [users, rooms] = lists;
    let state = State {
        ttl_ms,
        connections,
        users,
        rooms,
        members,
    };
    Ok(if op == OP_FULL {
        Announcement::Full(state)
    } else {
        Announcement::Delta(state)
    })
}

/// What this node knows of another.
#[derive(Debug)]
struct NodeState {
    connections: usize,
    users: HashMap<String, u32>,
    rooms: HashMap<String, u32>,
    members: HashSet<RoomMember>,
    expires: Instant,
}

/// This node's replica of every other live node's presence.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    nodes: HashMap<String, NodeState>,
    /// Users whose devices on some node changed since the last
    /// [`take_user_changes`](Self::take_user_changes) (a superset: some may not have changed
    /// whether they are online elsewhere).
    touched: HashSet<String>,
    /// Likewise for (room, member) pairs.
    touched_members: HashSet<RoomMember>,
}

impl Replica {
    /// Applies an announcement from `node`; returns whether `node` was new to the replica.
    pub(crate) fn apply(&mut self, node: &str, a: Announcement, now: Instant) -> bool {
        let (state, full) = match a {
            Announcement::Goodbye => {
                if let Some(gone) = self.nodes.remove(node) {
                    self.touched.extend(gone.users.into_keys());
                    self.touched_members.extend(gone.members);
                }
                return false;
            }
            Announcement::Hello => return !self.nodes.contains_key(node),
            Announcement::Full(s) => (s, true),
            Announcement::Delta(s) => (s, false),
        };
        let ttl = Duration::from_millis(u64::from(state.ttl_ms.max(1)));
        let new = !self.nodes.contains_key(node);
        let entry = self
            .nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeState {
                connections: 0,
                users: HashMap::new(),
                rooms: HashMap::new(),
                members: HashSet::new(),
                expires: now + ttl,
            });
        entry.expires = now + ttl;
        entry.connections = state.connections as usize;
        if full {
            self.touched.extend(entry.users.drain().map(|(u, _)| u));
            entry.rooms.clear();
            self.touched_members.extend(entry.members.drain());
        }
        for (member, present) in state.members {
            if present {
                entry.members.insert(member.clone());
            } else {
                entry.members.remove(&member);
            }
            self.touched_members.insert(member);
        }
        self.touched
            .extend(state.users.iter().map(|(u, _)| u.clone()));
        for (map, list) in [
            (&mut entry.users, state.users),
            (&mut entry.rooms, state.rooms),
        ] {
            for (k, n) in list {
                if n == 0 {
                    map.remove(&k);
                } else {
                    map.insert(k, n);
                }
            }
        }
        new
    }

    /// Forgets nodes whose TTL ran out; returns how many.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let before = self.nodes.len();
        let touched = &mut self.touched;
        let touched_members = &mut self.touched_members;
        self.nodes.retain(|_, n| {
            let live = n.expires > now;
            if !live {
                touched.extend(n.users.keys().cloned());
                touched_members.extend(n.members.drain());
            }
            live
        });
        before - self.nodes.len()
    }

    pub(crate) fn clear(&mut self) {
        for (_, n) in self.nodes.drain() {
            self.touched.extend(n.users.into_keys());
            self.touched_members.extend(n.members);
        }
    }

    /// The (room, member) pairs touched since the last call, each with whether another node
    /// has it now.
    pub(crate) fn take_member_changes(&mut self) -> Vec<(RoomMember, bool)> {
        let touched = std::mem::take(&mut self.touched_members);
        touched
            .into_iter()
            .map(|m| {
                let present = self.nodes.values().any(|n| n.members.contains(&m));
                (m, present)
            })
            .collect()
    }

    /// The users touched since the last call, each with whether it has a device on another
    /// node now.
    pub(crate) fn take_user_changes(&mut self) -> Vec<(String, bool)> {
        let touched = std::mem::take(&mut self.touched);
        touched
            .into_iter()
            .map(|u| {
                let online = self.user_online(&u);
                (u, online)
            })
            .collect()
    }

    pub(crate) fn has_node(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    pub(crate) fn nodes(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    pub(crate) fn user_online(&self, user: &str) -> bool {
        self.nodes.values().any(|n| n.users.contains_key(user))
    }

    /// Nodes holding a device of `user`.
    pub(crate) fn nodes_of_user(&self, user: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.users.contains_key(user))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub(crate) fn users(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        for n in self.nodes.values() {
            seen.extend(n.users.keys().map(String::as_str));
        }
        seen.into_iter().map(str::to_string).collect()
    }

    pub(crate) fn connections(&self) -> usize {
        self.nodes.values().map(|n| n.connections).sum()
    }

    pub(crate) fn rooms(&self) -> Vec<(String, usize)> {
        let mut out: HashMap<&str, usize> = HashMap::new();
        for n in self.nodes.values() {
            for (r, c) in &n.rooms {
                *out.entry(r).or_default() += *c as usize;
            }
        }
        out.into_iter().map(|(r, c)| (r.to_string(), c)).collect()
    }

    /// Nodes with members in `room`.
    pub(crate) fn nodes_of_room(&self, room: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.rooms.contains_key(room))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub(crate) fn room_size(&self, room: &str) -> usize {
        self.nodes
            .values()
            .filter_map(|n| n.rooms.get(room))
            .map(|c| *c as usize)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(users: &[(&str, u32)], rooms: &[(&str, u32)]) -> State {
        State {
            ttl_ms: 1000,
            connections: users.iter().map(|(_, n)| n).sum(),
            users: users.iter().map(|(u, n)| (u.to_string(), *n)).collect(),
            rooms: rooms.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            members: Vec::new(),
        }
    }

    fn round_trip(op: u8, s: &State) -> Announcement {
        decode(&encode_state(op, s)).expect("decodes")
    }

    #[test]
    fn full_then_delta_then_expiry() {
        let now = Instant::now();
        let mut r = Replica::default();
        let full = state(&[("alice", 2), ("bob", 1)], &[("general", 3)]);
        assert!(r.apply("b", round_trip(OP_FULL, &full), now));
        assert!(r.user_online("alice"));
        assert_eq!(r.connections(), 3);
        assert_eq!(r.room_size("general"), 3);
        let delta = state(&[("alice", 0)], &[("general", 1)]);
        assert!(!r.apply("b", round_trip(OP_DELTA, &delta), now));
        assert!(!r.user_online("alice"));
        assert!(r.user_online("bob"));
        assert_eq!(r.room_size("general"), 1);
        assert_eq!(r.expire(now + Duration::from_millis(500)), 0);
        assert_eq!(r.expire(now + Duration::from_millis(1001)), 1);
        assert!(!r.user_online("bob"));
    }

    #[test]
    fn room_members_round_trip_and_their_changes_are_reported() {
        let now = Instant::now();
        let mut r = Replica::default();
        let alice = ("r".into(), PresenceKey::User("alice".into()));
        let anon = ("r".into(), PresenceKey::Socket("b.7".into()));
        let mut full = state(&[("alice", 1)], &[("r", 2)]);
        full.members = vec![(alice.clone(), true), (anon.clone(), true)];
        r.apply("b", round_trip(OP_FULL, &full), now);
        let mut changes = r.take_member_changes();
        changes.sort();
        assert_eq!(changes, [(alice.clone(), true), (anon.clone(), true)]);
        let mut delta = state(&[], &[("r", 1)]);
        delta.members = vec![(anon.clone(), false)];
        r.apply("b", round_trip(OP_DELTA, &delta), now);
        assert_eq!(r.take_member_changes(), [(anon, false)]);
        r.apply("b", Announcement::Goodbye, now);
        assert_eq!(r.take_member_changes(), [(alice, false)]);
    }

    #[test]
    fn goodbye_forgets_at_once() {
        let now = Instant::now();
        let mut r = Replica::default();
        r.apply("b", round_trip(OP_FULL, &state(&[("x", 1)], &[])), now);
        r.apply("b", Announcement::Goodbye, now);
        assert!(!r.has_node("b"));
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let mut s = state(&[("alice", 1)], &[("r", 1)]);
        s.members = vec![(("r".into(), PresenceKey::User("alice".into())), true)];
        let good = encode_state(OP_FULL, &s);
        // The one valid prefix: a payload without the member list (see the module docs).
        let without_members = good.len() - (4 + 1 + 2 + 1 + 2 + 5);
        for cut in 1..good.len() {
            if cut != without_members {
                assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
            }
        }
        assert!(matches!(
            decode(&good[..without_members]),
            Ok(Announcement::Full(State { members, .. })) if members.is_empty()
        ));
        assert!(decode(&[9]).is_err());
        // A huge claimed count does not allocate or panic.
        let mut huge = vec![OP_DELTA, 0, 0, 0, 1, 0, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&huge).is_err());
    }
}
