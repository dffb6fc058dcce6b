//! Cluster-wide online/offline events: a user is online while it has a device on any node.
//!
//! The hub reports its *local* transitions to the relay this module installs
//! ([`ClusterPresence::install`]); the presence replica reports, per user, whether the user has
//! a device on another node ([`ClusterPresence::remote`], fed by
//! [`Shared::settle`](super::link::Shared::settle)). The view keeps both halves per user and
//! publishes to the hub's subscribers only when their union changes: `Online` on the user's
//! first device anywhere, `Offline` when its last device anywhere is gone — including a node
//! that died and was expired from the replica. Each node publishes each transition once, as it
//! learns of it.
//!
//! Room `Joined` / `Left` pass through unchanged: they are this node's transitions (the
//! replica has member *counts* per node and room, not who the members are).
//!
//! Locking: the relay runs inside the hub's users-shard (or room writer) critical section and
//! takes only the view's lock; [`Shared::settle`](super::link::Shared::settle) holds the
//! replica's lock while it updates the view, so the view sees the replica's changes in the
//! order they happened. Order: hub shard → replica → view → the hub's event source. Nothing
//! holding the view takes another of them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc as StrArc;

use crate::hub::StreamHub;
use crate::presence_events::{PresenceEvent, PresenceEvents};
use crate::sync::{Mutex, lock};

/// Where one user is online, as this node knows it.
#[derive(Debug, Default)]
struct Whereabouts {
    /// A device on this node (from the hub's own transitions).
    local: bool,
    /// A device on another node (from the replica).
    remote: bool,
}

#[derive(Debug, Default)]
struct View {
    /// Only users online somewhere (an entry with both halves false is removed).
    users: HashMap<String, Whereabouts>,
    /// While the relay is being installed: users the relay already saw a transition of, whose
    /// `local` the snapshot of the hub's users must not overwrite.
    seeding: Option<HashSet<String>>,
}

/// This node's view of who is online cluster-wide, and the relay that turns it into events.
#[derive(Debug, Default)]
pub(crate) struct ClusterPresence {
    view: Mutex<View>,
}

impl ClusterPresence {
    /// Routes `hub`'s local transitions through this view, seeded with the users the hub has
    /// online now (the hub published their `Online` itself, before the relay existed).
    pub(crate) fn install(self: &StrArc<Self>, hub: &StreamHub) {
        lock(&self.view).seeding = Some(HashSet::new());
        let this = StrArc::clone(self);
        hub.presence_events()
            .set_relay(StrArc::new(move |events: &PresenceEvents, event| {
                this.local(events, event)
            }));
        let online = hub.local_users();
        let mut view = lock(&self.view);
        let seen = view.seeding.take().unwrap_or_default();
        for (user, _) in online {
            if !seen.contains(&user) {
                view.users.entry(user).or_default().local = true;
            }
        }
    }

    /// A local transition (the relay's body).
    fn local(&self, events: &PresenceEvents, event: PresenceEvent) {
        let (user, online) = match &event {
            PresenceEvent::Online { user } => (user, true),
            PresenceEvent::Offline { user } => (user, false),
            // This node's room transitions, as they are.
            _ => return events.publish(event),
        };
        let mut view = lock(&self.view);
        if let Some(seen) = &mut view.seeding {
            seen.insert(user.to_string());
        }
        let publish = match view.users.get_mut(&**user) {
            Some(w) => {
                let was = w.local || w.remote;
                w.local = online;
                let now = w.local || w.remote;
                if !now {
                    view.users.remove(&**user);
                }
                was != now
            }
            None if online => {
                view.users.insert(
                    user.to_string(),
                    Whereabouts {
                        local: true,
                        remote: false,
                    },
                );
                true
            }
            // Online before the relay existed and gone before the snapshot: the hub had
            // published its `Online`, so this `Offline` is due.
            None => true,
        };
        if publish {
            events.publish(event);
        }
    }

    /// Whether `user` has a device on another node, as the replica says now.
    pub(crate) fn remote(&self, events: &PresenceEvents, user: String, online: bool) {
        let mut view = lock(&self.view);
        let event = match view.users.get_mut(&user) {
            Some(w) => {
                let was = w.local || w.remote;
                w.remote = online;
                if w.local || w.remote {
                    return;
                }
                view.users.remove(&user);
                if !was {
                    return;
                }
                PresenceEvent::Offline { user: user.into() }
            }
            None if online => {
                view.users.insert(
                    user.clone(),
                    Whereabouts {
                        local: false,
                        remote: true,
                    },
                );
                PresenceEvent::Online { user: user.into() }
            }
            None => return,
        };
        events.publish(event);
    }
}
