//! Rooms: membership as chunked copy-on-write snapshots behind an arc-swap cell.
//!
//! # Layout
//!
//! A room's members are an immutable [`Members`] snapshot: a spine of `Arc`'d chunks of at
//! most [`CHUNK`] members each. A broadcast loads the current snapshot (wait-free) and walks
//! the chunks — a linear scan over plain pointers, without any lock. A join or leave, under
//! the room's writer mutex, copies the spine (one `Arc` per chunk) and the one or two chunks
//! it changes, then publishes the new snapshot. At 100,000 members that is ~200 spine
//! pointers and ≤ 2 chunks instead of the whole list (`docs/design.md`, "Rooms"); a leave moves the last
//! member into the hole, so members are unordered.
//!
//! # Why members are plain pointers, and why that is sound
//!
//! Copying a chunk of `Arc`s would bump one reference count per member — a cache miss each in
//! a large hub — so a chunk holds `Member`s: raw pointers to the socket's registry entry and to
//! its queue. The room's writer state owns one `Arc` per current member. When a member leaves,
//! its `Arc` is not dropped: it is *retired* into the link that the previous snapshot holds,
//! and every snapshot's link chains to its successor's. Holding any snapshot therefore keeps
//! alive every entry retired after it was published — exactly the entries it may still point
//! to. When the last reader of an old snapshot drops it, the chain prefix and the retired
//! entries go with it. (Epoch reclamation, built from reference counts; `tests/hub/room_*.rs` run
//! clean under valgrind, and the loom models exercise it.)
//!
//! Chunks themselves are plain `Arc`s, released by whoever drops the last snapshot using
//! them — usually the writer, as it publishes. An earlier version also retired superseded
//! chunks through the chain (a `memcpy`'d spine, no reference counts), but then a long
//! broadcast inherited the freeing of every chunk superseded while it ran: under concurrent
//! churn the bench measured broadcast throughput at 0.33× of the quiet rate, against 0.98×
//! with `Arc` chunks, for a leave+join at 100,000 members of 4.8 µs instead of 5.8 µs
//! (`docs/design.md`, "Rooms", from BENCHMARKS.md).

use std::collections::HashMap;
use std::ptr;
use std::sync::Arc as StrArc;

use smallvec::SmallVec;

use crate::entry::SocketEntry;
use crate::history::RoomLog;
use crate::presence_events::{PresenceEvent, PresenceEvents, PresenceKey};
use crate::queue::{BurstSize, Shared};
use crate::report::BroadcastReport;
use crate::shared_message::SharedMessage;
use crate::sync::{Arc, AtomicCell, AtomicPtr, HashState, Loaded, Mutex, Ordering, lock};

/// Members per chunk. A join copies at most one chunk; a leave at most two.
#[cfg(not(nucleus_loom))]
pub(crate) const CHUNK: usize = 512;
/// Members per chunk, shrunk under loom (as tokio shrinks its mpsc block) so that a model of
/// a few members crosses chunk boundaries: `loom_tests/rooms.rs` (i) leaves across chunks.
#[cfg(nucleus_loom)]
pub(crate) const CHUNK: usize = 4;

/// One member, as a broadcast sees it: where to push, and who it is.
#[derive(Clone, Copy)]
pub(crate) struct Member {
    queue: *const Shared,
    entry: *const SocketEntry,
}

// SAFETY: the pointees are `Sync` (`Shared` and `SocketEntry` are shared across threads by
// design) and are kept alive by the room's writer state or the retire chain for as long as
// any snapshot holding the pointer is alive (see the module docs).
unsafe impl Send for Member {}
// SAFETY: as above.
unsafe impl Sync for Member {}

impl Member {
    fn of(entry: &Arc<SocketEntry>) -> Self {
        Self {
            queue: entry.socket.sender().shared() as *const Shared,
            entry: Arc::as_ptr(entry),
        }
    }

    fn key(&self) -> usize {
        self.entry as usize
    }
}

/// An immutable chunk of members.
struct Chunk(Box<[Member]>);

/// An immutable membership snapshot.
pub(crate) struct Members {
    spine: Box<[Arc<Chunk>]>,
    len: usize,
    /// Keeps alive everything retired after this snapshot was published.
    retired: Arc<RetireLink>,
}

impl Members {
    fn empty() -> Self {
        Self {
            spine: Box::new([]),
            len: 0,
            retired: Arc::new(RetireLink::new()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn chunks(&self) -> impl Iterator<Item = &[Member]> {
        self.spine.iter().map(|c| &*c.0)
    }

    /// The registry entries of the members, valid for as long as `self` is borrowed.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &SocketEntry> {
        // SAFETY: `self` keeps every member's entry alive.
        self.chunks()
            .flat_map(|c| c.iter())
            .map(|m| unsafe { &*m.entry })
    }

    /// Pushes `msg` to every member except `except`; never blocks.
    pub(crate) fn broadcast(
        &self,
        msg: &SharedMessage,
        except: *const SocketEntry,
    ) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        // Every member's reference with one read-modify-write (the one `except` skips goes
        // back when `shares` drops); see `src/shared_message.rs`.
        let mut shares = msg.shares(self.len);
        self.each_queue(except, |queue| {
            let handle = shares.take().unwrap_or_else(|| msg.clone());
            report.record(queue.push(handle));
        });
        report
    }

    /// Calls `f` with the queue of every member except `except`, in snapshot order.
    #[inline(always)]
    fn each_queue(&self, except: *const SocketEntry, mut f: impl FnMut(&Shared)) {
        for chunk in self.chunks() {
            for (i, m) in chunk.iter().enumerate() {
                // In a large room each queue header is a cache miss; asking for the one
                // PREFETCH_AHEAD members on overlaps those misses instead of paying them in turn.
                if let Some(ahead) = chunk.get(i + PREFETCH_AHEAD) {
                    prefetch_queue(ahead.queue);
                }
                if ptr::eq(m.entry, except) {
                    continue;
                }
                // SAFETY: `self` keeps the member's entry, and so its queue, alive.
                f(unsafe { &*m.queue });
            }
        }
    }

    /// Pushes a burst of messages, in order, to every member except `except`; never
    /// blocks. Recipient-major: each member's queue takes the whole burst at once
    /// ([`Shared::push_burst`]), so its header and tail segment are touched once per burst
    /// instead of once per message. Every member gets the burst in order; what one message
    /// of it would get with [`broadcast`](Self::broadcast) (queued, dropped, closed) is
    /// what the report counts, message by message; with it come the bytes queued in all.
    pub(crate) fn broadcast_burst(
        &self,
        msgs: &[SharedMessage],
        except: *const SocketEntry,
    ) -> (BroadcastReport, u64) {
        let mut report = BroadcastReport::default();
        let mut bytes = 0u64;
        let burst = BurstSize::of(msgs);
        let mut shares: SmallVec<[_; BURST_INLINE]> =
            msgs.iter().map(|m| m.shares(self.len)).collect();
        self.each_queue(except, |queue| {
            let handles = shares
                .iter_mut()
                .zip(msgs)
                .map(|(shares, msg)| shares.take().unwrap_or_else(|| msg.clone()));
            match queue.push_burst(&burst, handles) {
                Ok(()) => {
                    report.queued += msgs.len();
                    bytes += burst.bytes();
                }
                // Not all of it fits (or the queue closed): one at a time, each under the
                // queue's overflow policy.
                Err(handles) => {
                    for handle in handles {
                        let len = handle.len() as u64;
                        let outcome = queue.push(handle);
                        if outcome.is_ok() {
                            bytes += len;
                        }
                        report.record(outcome);
                    }
                }
            }
        });
        (report, bytes)
    }
}

/// A burst's messages whose shares a broadcast keeps without allocating (a read of 32
/// messages is the load generator's window; a longer burst spills to the heap).
pub(crate) const BURST_INLINE: usize = 32;

/// How many members ahead a broadcast prefetches queue headers.
const PREFETCH_AHEAD: usize = 16;

/// Hints the CPU to fetch the cache lines a push touches in this queue (see
/// [`crate::sync::prefetch`]: a hint only, sound for any address).
#[inline(always)]
fn prefetch_queue(queue: *const Shared) {
    #[cfg(not(nucleus_loom))]
    for offset in Shared::PUSH_LINES {
        crate::sync::prefetch(queue, offset);
    }
    #[cfg(nucleus_loom)]
    let _ = queue;
}

/// One link of the retire chain; filled once, when the snapshot holding it is superseded by
/// one without some of its members.
struct RetireLink {
    /// Null until filled (under the room's writer lock); then owns a `Box<RetiredBag>`.
    /// Invariant: written at most once, read only on drop.
    bag: AtomicPtr<RetiredBag>,
}

type Retired = SmallVec<[Arc<SocketEntry>; 1]>;

struct RetiredBag {
    retired: Retired,
    next: Arc<RetireLink>,
}

impl RetireLink {
    fn new() -> Self {
        Self {
            bag: AtomicPtr::new(ptr::null_mut()),
        }
    }

    fn fill(&self, bag: RetiredBag) {
        let raw = Box::into_raw(Box::new(bag));
        // ORDERING: Release publishes the bag to whichever thread drops the link (that thread
        // is also ordered after us through the Arc count; this keeps the protocol local).
        let previous = self.bag.swap(raw, Ordering::AcqRel);
        debug_assert!(previous.is_null(), "a retire link is filled once");
    }
}

impl Drop for RetireLink {
    fn drop(&mut self) {
        // ORDERING: Acquire pairs with fill().
        let mut raw = self.bag.swap(ptr::null_mut(), Ordering::Acquire);
        // Iterative, so that dropping a long chain cannot overflow the stack.
        while !raw.is_null() {
            // SAFETY: `raw` came from `Box::into_raw` in `fill` and was swapped out exactly once.
            let bag = unsafe { Box::from_raw(raw) };
            let RetiredBag { retired, next } = *bag;
            drop(retired);
            raw = match Arc::try_unwrap(next) {
                // ORDERING: Acquire pairs with fill().
                Ok(link) => link.bag.swap(ptr::null_mut(), Ordering::Acquire),
                Err(_shared) => ptr::null_mut(),
            };
        }
    }
}

/// The presence key of a socket: its user, or itself if anonymous.
pub(crate) fn presence_key(socket: &crate::socket::WebSocket) -> PresenceKey {
    match socket.user_arc() {
        Some(user) => PresenceKey::User(StrArc::clone(user)),
        None => PresenceKey::Socket(StrArc::clone(&socket.id)),
    }
}

/// A room in the hub's index: its name, its current snapshot and its writer state.
pub(crate) struct RoomCell {
    pub(crate) name: StrArc<str>,
    members: AtomicCell<Members>,
    writer: Mutex<RoomWriter>,
    /// The room's history log if it keeps one (shared by the room's incarnations; set when
    /// the cell is made, so a broadcast finds it without a second index lookup).
    pub(crate) log: Option<Arc<RoomLog>>,
}

struct RoomWriter {
    /// entry address → (the owning reference, position in the snapshot).
    positions: HashMap<usize, (Arc<SocketEntry>, usize), HashState>,
    /// The current snapshot's chunks, in spine order (the writer replaces, never mutates).
    chunks: Vec<Arc<Chunk>>,
    /// Set when the last member left: the room is being removed from the index and must not
    /// be joined; a joiner creates a fresh room instead.
    dead: bool,
    /// Authenticated users with a socket in the room → how many of their sockets are in it.
    /// Invariant: equals the count over `positions`; a user with none has no entry. Kept
    /// here so a user's first join and last leave are decided under the room's own lock.
    users: HashMap<StrArc<str>, u32, HashState>,
}

pub(crate) enum JoinOutcome {
    Joined,
    AlreadyMember,
    /// The room emptied and is leaving the index; retry with a fresh room.
    Dead,
}

pub(crate) enum LeaveOutcome {
    NotMember,
    Left { now_empty: bool },
}

impl RoomCell {
    pub(crate) fn new(name: StrArc<str>, log: Option<Arc<RoomLog>>) -> Self {
        Self {
            name,
            log,
            members: AtomicCell::new(Arc::new(Members::empty())),
            writer: Mutex::new(RoomWriter {
                positions: HashMap::default(),
                chunks: Vec::new(),
                dead: false,
                users: HashMap::default(),
            }),
        }
    }

    /// The current snapshot, loaded without a lock.
    pub(crate) fn load(&self) -> Loaded<Members> {
        self.members.load()
    }

    /// The current snapshot as an owned handle.
    pub(crate) fn load_full(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Publishes the writer's chunks as the new snapshot, retiring `retired` behind the
    /// current one. Called with the writer lock held.
    fn publish(&self, w: &RoomWriter, retired: Retired) {
        let current = self.members.load();
        let link = if retired.is_empty() {
            // Nothing superseded: the successor shares the pending link.
            Arc::clone(&current.retired)
        } else {
            let link = Arc::new(RetireLink::new());
            current.retired.fill(RetiredBag {
                retired,
                next: Arc::clone(&link),
            });
            link
        };
        drop(current);
        let next = Members {
            spine: w.chunks.iter().cloned().collect(),
            len: w.positions.len(),
            retired: link,
        };
        self.members.store(Arc::new(next));
    }

    /// Adds a member; a first device of its user (or an anonymous socket) is announced to
    /// `events` before the lock is released, so one room's events keep their order.
    pub(crate) fn insert(&self, entry: &Arc<SocketEntry>, events: &PresenceEvents) -> JoinOutcome {
        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        if w.dead {
            return JoinOutcome::Dead;
        }
        let member = Member::of(entry);
        if w.positions.contains_key(&member.key()) {
            return JoinOutcome::AlreadyMember;
        }
        let pos = w.positions.len();
        let ci = pos / CHUNK;
        match w.chunks.get_mut(ci) {
            Some(chunk) => {
                let grown = chunk.0.iter().copied().chain([member]).collect();
                *chunk = Arc::new(Chunk(grown));
            }
            None => w.chunks.push(Arc::new(Chunk(Box::new([member])))),
        }
        w.positions.insert(member.key(), (Arc::clone(entry), pos));
        self.publish(w, Retired::new());
        let first = match entry.socket.user_arc() {
            Some(user) => {
                let count = w.users.entry(StrArc::clone(user)).or_insert(0);
                *count += 1;
                *count == 1
            }
            None => true,
        };
        if first {
            events.local(|| PresenceEvent::Joined {
                room: StrArc::clone(&self.name),
                member: presence_key(&entry.socket),
            });
        }
        JoinOutcome::Joined
    }

    /// Removes a member; a last device of its user (or an anonymous socket) is announced to
    /// `events` before the lock is released.
    pub(crate) fn remove(&self, entry: &SocketEntry, events: &PresenceEvents) -> LeaveOutcome {
        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        let key = entry as *const SocketEntry as usize;
        let Some((owned, pos)) = w.positions.remove(&key) else {
            return LeaveOutcome::NotMember;
        };
        let mut retired = Retired::new();
        retired.push(owned);
        // `positions` no longer counts the leaver: its old length - 1 is the last index.
        let last = w.positions.len();
        let (lc, li) = (last / CHUNK, last % CHUNK);
        let moved = w.chunks[lc].0[li];
        let mut last_chunk: Vec<Member> = w.chunks[lc].0[..li].to_vec();
        if pos != last {
            let (pc, pi) = (pos / CHUNK, pos % CHUNK);
            if pc == lc {
                last_chunk[pi] = moved;
            } else {
                // Cross-chunk move: the moved member leaves the last chunk and fills the hole in
                // chunk `pc`. Both chunks change in ONE published snapshot; a broadcast must
                // never see the member in neither (loom model (i) checks this).
                #[cfg(nucleus_loom_planted_bug)]
                {
                    // PLANTED BUG (loom builds with `--cfg nucleus_loom_planted_bug` only):
                    // publishes the shrunk last chunk before the hole is filled, so a
                    // concurrent broadcast can miss the moved member. Model (i) must fail.
                    w.chunks[lc] = Arc::new(Chunk(last_chunk.clone().into_boxed_slice()));
                    self.publish(w, Retired::new());
                }
                let mut changed: Box<[Member]> = w.chunks[pc].0.clone();
                changed[pi] = moved;
                w.chunks[pc] = Arc::new(Chunk(changed));
            }
            if let Some(slot) = w.positions.get_mut(&moved.key()) {
                slot.1 = pos;
            }
        }
        if last_chunk.is_empty() {
            w.chunks.pop();
        } else {
            w.chunks[lc] = Arc::new(Chunk(last_chunk.into_boxed_slice()));
        }
        self.publish(w, retired);
        let last_device = match entry.socket.user_arc() {
            Some(user) => match w.users.get_mut(user) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                _ => {
                    w.users.remove(user);
                    true
                }
            },
            None => true,
        };
        let now_empty = last == 0;
        if now_empty {
            w.dead = true;
        }
        // PLANTED BUG (loom builds with `--cfg nucleus_loom_planted_presence_bug` only): the
        // `Left` is emitted after the writer lock is released, so a racing join's `Joined`
        // can overtake it. Loom model (k) must catch this.
        #[cfg(nucleus_loom_planted_presence_bug)]
        drop(guard);
        if last_device {
            events.local(|| PresenceEvent::Left {
                room: StrArc::clone(&self.name),
                member: presence_key(&entry.socket),
            });
        }
        LeaveOutcome::Left { now_empty }
    }

    /// Who is present in the room: each authenticated user once, each anonymous socket.
    pub(crate) fn presence(&self) -> Vec<PresenceKey> {
        let w = lock(&self.writer);
        let mut out: Vec<PresenceKey> = w
            .users
            .keys()
            .map(|u| PresenceKey::User(StrArc::clone(u)))
            .collect();
        out.extend(
            w.positions
                .values()
                .filter(|(e, _)| e.socket.user_arc().is_none())
                .map(|(e, _)| PresenceKey::Socket(StrArc::clone(&e.socket.id))),
        );
        out.sort_unstable();
        out
    }

    /// Whether the room has been emptied and is on its way out of the index.
    pub(crate) fn is_dead(&self) -> bool {
        lock(&self.writer).dead
    }
}

/// A snapshot of a room: its name and its members at the moment it was taken.
///
/// Returned by [`StreamHub::get_room`](crate::StreamHub::get_room). It does not change when
/// sockets join or leave afterwards; take a new one to see them. Holding it keeps the
/// snapshot's member entries in memory, so don't keep it for long.
///
/// # Examples
///
/// ```
/// # use nucleus_stream::{channel, QueueConfig, StreamHub, WebSocket};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let hub = StreamHub::new();
/// let (tx, _rx) = channel(QueueConfig::default());
/// hub.register(WebSocket::new("a", tx)).await?;
/// hub.join_room("a", "lobby").await?;
/// let room = hub.get_room("lobby").await.expect("room exists");
/// assert_eq!(room.name(), "lobby");
/// assert_eq!(room.size(), 1);
/// assert!(room.contains("a"));
/// # Ok::<(), nucleus_stream::StreamError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Room {
    name: StrArc<str>,
    members: Arc<Members>,
}

impl Room {
    pub(crate) fn new(name: StrArc<str>, members: Arc<Members>) -> Self {
        Self { name, members }
    }

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of members in this snapshot.
    pub fn size(&self) -> usize {
        self.members.len
    }

    /// Whether this snapshot has no members (only possible for a room being removed).
    pub fn is_empty(&self) -> bool {
        self.members.len == 0
    }

    /// The members' socket ids, in no particular order.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.members.entries().map(|e| &*e.socket.id)
    }

    /// Whether the socket with this id is in this snapshot (a linear scan).
    pub fn contains(&self, socket_id: &str) -> bool {
        self.members().any(|id| id == socket_id)
    }
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("name", &self.name)
            .field("size", &self.size())
            .finish()
    }
}

impl Drop for RoomCell {
    fn drop(&mut self) {
        // The current snapshot may outlive the room (a `Room` handle, an in-flight broadcast
        // when the hub itself is dropped): hand its members' entries to its retire link.
        let mut w = lock(&self.writer);
        let retired: Retired = w.positions.drain().map(|(_, (entry, _))| entry).collect();
        drop(w);
        if !retired.is_empty() {
            self.members.load().retired.fill(RetiredBag {
                retired,
                next: Arc::new(RetireLink::new()),
            });
        }
    }
}
