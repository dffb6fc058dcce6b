//! The hub's record of a registered socket: [`SocketEntry`].

use std::sync::Arc;

use smallvec::SmallVec;

use crate::socket::WebSocket;
use crate::sync::Mutex;

/// A registered socket: the hub's clone of the [`WebSocket`] plus its room list.
pub(crate) struct SocketEntry {
    pub(crate) socket: WebSocket,
    /// Registration flag and room list, changed together under this lock.
    pub(crate) state: Mutex<EntryState>,
}

/// The mutable part of a [`SocketEntry`].
pub(crate) struct EntryState {
    /// True from the end of `register` until `unregister` takes the lock.
    pub(crate) registered: bool,
    /// Rooms this socket is in. Invariant: the socket is a member of exactly the live room of
    /// each name here (a room cannot die while it has this member). Two inline (a third
    /// spills to the heap): with four, every entry was 32 bytes larger, a 176-byte malloc
    /// chunk instead of 144 for each connection, most of which are in one or two rooms.
    pub(crate) rooms: SmallVec<[Arc<str>; 2]>,
}

impl SocketEntry {
    /// An entry for `socket`, not yet registered and in no room.
    pub(crate) fn new(socket: WebSocket) -> Self {
        Self {
            socket,
            state: Mutex::new(EntryState {
                registered: false,
                rooms: SmallVec::new(),
            }),
        }
    }
}
