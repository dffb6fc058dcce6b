//! Cluster-wide presence events: a user is online while it has a device on any node, and a
//! member of a room while one of its devices on any node is in it.
//!
//! The hub reports its *local* transitions to the relay this module installs
//! ([`ClusterPresence::install`]); the presence replica reports, per user and per (room,
//! member), whether another node has it ([`ClusterPresence::remote`] and
//! [`remote_member`](ClusterPresence::remote_member), fed by
//! [`Shared::settle`](super::link::Shared::settle)). The view keeps both halves of each and
//! publishes to the hub's subscribers only when their union flips: `Online` on the user's
//! first device anywhere, `Offline` when its last device anywhere is gone, `Joined` when the
//! member's first device anywhere enters the room, `Left` when its last one anywhere leaves —
//! including a node that died and was expired from the replica. Each node publishes each
//! transition once, as it learns of it.
//!
//! The view's local halves of the room pairs are also what this node announces: every pair
//! in a full state ([`local_members`](ClusterPresence::local_members)), the pairs that changed
//! in a delta ([`take_dirty_members`](ClusterPresence::take_dirty_members)).
//!
//! Locking: the relay runs inside the hub's users-shard (or room writer) critical section and
//! takes only the view's lock; [`Shared::settle`](super::link::Shared::settle) holds the
//! replica's lock while it updates the view, so the view sees the replica's changes in the
//! order they happened. Order: hub shard or room writer → replica → view → the hub's event
//! source. Nothing holding the view takes another of them.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc as StrArc;

use super::presence::RoomMember;
use crate::hub::StreamHub;
use crate::presence_events::{PresenceEvent, PresenceEvents};
use crate::sync::{Mutex, lock};

/// Where one user (or one room member) is present, as this node knows it.
#[derive(Debug, Default)]
struct Whereabouts {
    /// On this node (from the hub's own transitions).
    local: bool,
    /// On another node (from the replica).
    remote: bool,
}

#[derive(Debug, Default)]
struct View {
    /// Only users online somewhere (an entry with both halves false is removed).
    users: HashMap<String, Whereabouts>,
    /// Only (room, member) pairs present somewhere, likewise.
    members: HashMap<RoomMember, Whereabouts>,
    /// Pairs whose local half changed since the last delta.
    dirty: HashSet<RoomMember>,
    /// While the relay is being installed: users and pairs the relay already saw a
    /// transition of, whose `local` the snapshot of the hub must not overwrite.
    seeding: Option<(HashSet<String>, HashSet<RoomMember>)>,
}

/// Sets one half (`local` or remote) of `key`'s whereabouts in `map`; returns whether the
/// union flipped (an event is due). Entries with both halves false are removed.
fn set_half<K: Hash + Eq + Clone>(
    map: &mut HashMap<K, Whereabouts>,
    key: &K,
    local: bool,
    present: bool,
) -> bool {
    match map.get_mut(key) {
        Some(w) => {
            let was = w.local || w.remote;
            if local {
                w.local = present;
            } else {
                w.remote = present;
            }
            let now = w.local || w.remote;
            if !now {
                map.remove(key);
            }
            was != now
        }
        None if present => {
            map.insert(
                key.clone(),
                Whereabouts {
                    local,
                    remote: !local,
                },
            );
            true
        }
        // Gone from a half that was never recorded: only a local departure of something
        // present before the relay existed gets here (the hub had published its arrival, so
        // the departure is due); a remote one is no change.
        None => local,
    }
}

/// This node's view of who is present cluster-wide, and the relay that turns it into events.
#[derive(Debug, Default)]
pub(crate) struct ClusterPresence {
    view: Mutex<View>,
}

impl ClusterPresence {
    /// Routes `hub`'s local transitions through this view, seeded with the users and room
    /// members the hub has now (the hub published their arrivals itself, before the relay
    /// existed; the next full state announces them).
    pub(crate) fn install(self: &StrArc<Self>, hub: &StreamHub) {
        lock(&self.view).seeding = Some(Default::default());
        let this = StrArc::clone(self);
        hub.presence_events()
            .set_relay(StrArc::new(move |events: &PresenceEvents, event| {
                this.local(events, event)
            }));
        let users = hub.local_users();
        let mut members = Vec::new();
        for (room, _) in hub.local_rooms() {
            let room: StrArc<str> = room.into();
            for key in hub.local_room_presence(&room) {
                members.push((StrArc::clone(&room), key));
            }
        }
        let mut view = lock(&self.view);
        let (seen_users, seen_members) = view.seeding.take().unwrap_or_default();
        for (user, _) in users {
            if !seen_users.contains(&user) {
                view.users.entry(user).or_default().local = true;
            }
        }
        for member in members {
            if !seen_members.contains(&member) {
                view.members.entry(member).or_default().local = true;
            }
        }
    }

    /// A local transition (the relay's body).
    fn local(&self, events: &PresenceEvents, event: PresenceEvent) {
        let mut view = lock(&self.view);
        let view = &mut *view;
        let due = match &event {
            PresenceEvent::Online { user } | PresenceEvent::Offline { user } => {
                let online = matches!(event, PresenceEvent::Online { .. });
                if let Some((seen, _)) = &mut view.seeding {
                    seen.insert(user.to_string());
                }
                set_half(&mut view.users, &user.to_string(), true, online)
            }
            PresenceEvent::Joined { room, member } | PresenceEvent::Left { room, member } => {
                let present = matches!(event, PresenceEvent::Joined { .. });
                let pair = (StrArc::clone(room), member.clone());
                if let Some((_, seen)) = &mut view.seeding {
                    seen.insert(pair.clone());
                }
                let due = set_half(&mut view.members, &pair, true, present);
                view.dirty.insert(pair);
                due
            }
        };
        if due {
            events.publish(event);
        }
    }

    /// Whether `user` has a device on another node, as the replica says now.
    pub(crate) fn remote(&self, events: &PresenceEvents, user: String, online: bool) {
        let mut view = lock(&self.view);
        if set_half(&mut view.users, &user, false, online) {
            let user = user.into();
            events.publish(if online {
                PresenceEvent::Online { user }
            } else {
                PresenceEvent::Offline { user }
            });
        }
    }

    /// Whether another node has `member` in its room, as the replica says now.
    pub(crate) fn remote_member(&self, events: &PresenceEvents, member: RoomMember, present: bool) {
        let mut view = lock(&self.view);
        if set_half(&mut view.members, &member, false, present) {
            let (room, member) = member;
            events.publish(if present {
                PresenceEvent::Joined { room, member }
            } else {
                PresenceEvent::Left { room, member }
            });
        }
    }

    /// Every (room, member) pair present on this node (for a full state).
    pub(crate) fn local_members(&self) -> Vec<(RoomMember, bool)> {
        let view = lock(&self.view);
        view.members
            .iter()
            .filter(|(_, w)| w.local)
            .map(|(m, _)| (m.clone(), true))
            .collect()
    }

    /// The pairs whose local presence changed since the last call, with their presence now
    /// (for a delta).
    pub(crate) fn take_dirty_members(&self) -> Vec<(RoomMember, bool)> {
        let mut view = lock(&self.view);
        let dirty = std::mem::take(&mut view.dirty);
        dirty
            .into_iter()
            .map(|m| {
                let here = view.members.get(&m).is_some_and(|w| w.local);
                (m, here)
            })
            .collect()
    }
}
