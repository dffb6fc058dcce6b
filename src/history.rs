//! Room history: a bounded in-memory log per room, offsets and epochs, and the recovery seam.
//!
//! A room whose name matches [`HistoryConfig`] gets a [`RoomLog`] the first time something is
//! published to it or someone joins it with a position. Every message published to the room
//! then gets the next **offset** (1, 2, 3, … per log) and carries the log's **epoch** (random,
//! drawn when the log is created: a hub restart or a new log means a new epoch). A socket that
//! joins with `since = {epoch, offset}` receives every message after `offset`, in order, and
//! then the live stream, with no gap and no duplicate at the seam — or, when the position is
//! not covered any more, an explicit "not recovered" ([`Recovery`]).
//!
//! # The protocol (why publishers never wait and the seam is exact)
//!
//! The log is a ring of slots, each an offset word and a pointer to one stored message.
//!
//! - **Publish** (lock-free): `offset = assigned.fetch_add(1) + 1`; build the message from its
//!   position; store it in slot `offset % capacity`; then `pending.fetch_add(1)`. The caller
//!   that moved `pending` from 0 becomes the room's single **deliverer**; every other caller
//!   leaves at once — the deliverer will deliver its slot.
//! - **Deliver**: the deliverer fans out the written slots in offset order (stopping at the
//!   first slot not written yet), advancing `delivered`, then subtracts the requests it has
//!   served from `pending`. A non-zero remainder means someone published meanwhile: it loops.
//!   Because requests are counted on one atomic with read-modify-writes, a publisher can never
//!   leave its slot to a deliverer that has already decided to stop (no lost wake-up). Since
//!   only the deliverer delivers, and in offset order, every member receives a room's messages
//!   in offset order even when publishers race.
//! - **Join with `since`**: the joiner takes the deliverer role itself (compare-exchange of
//!   `pending` from 0 to 1: it may wait for the current deliverer to finish — a join is not
//!   the broadcast path), joins the room's member snapshot, replays `(since, delivered]` from
//!   the ring into its own queue, and then serves as deliverer for whatever was published
//!   meanwhile. Everything up to `delivered` went out before it was a member (it gets it from
//!   the ring); everything after is delivered after it joined (it gets it live).
//!
//! **With a cluster** (feature `redis`) offsets come from Redis instead (`src/cluster/history.rs`):
//! the node's subscriber is the ring's one writer ([`RoomLog::append_at`]: duplicates dropped, a
//! new epoch or a gap starts the ring over), and a recovering joiner joins through the ring at
//! the position it read up to from Redis ([`RoomLog::join_covered`]) under the same role.
//!
//! `loom_tests/history.rs` model-checks that seam through this code; `--cfg
//! nucleus_loom_planted_bug_history` makes the joiner skip the deliverer role, and the model
//! catches the gap that opens.
//!
//! # Bounds
//!
//! The ring has `capacity = 2 × max_messages` slots (rounded up to a power of two). Offsets
//! that are published but not yet delivered may run up to `capacity - max_messages` ahead of
//! `delivered`; a publisher beyond that (the deliverer is that many messages behind) spins
//! until it catches up. Within that headroom the last `max_messages` delivered messages are
//! always intact, so a recovery of at most `max_messages` messages is always served. The age
//! bound is checked at recovery: a position whose next message is older than `max_age` is not
//! recovered. Memory per stored message: `docs/history.md`.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use crate::entry::SocketEntry;
use crate::message::SocketMessage;
use crate::report::BroadcastReport;
use crate::shared_message::SharedMessage;
use crate::sync::{Arc, AtomicPtr, AtomicU64, AtomicUsize, Ordering, spin_hint};

/// Which rooms keep a history, and how much.
///
/// Off by default. A room has history when its name starts with one of the configured
/// prefixes (the empty prefix matches every room).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nucleus_stream::{HistoryConfig, HubConfig, StreamHub};
/// let hub = StreamHub::with_config(HubConfig::default().history(
///     HistoryConfig::default()
///         .prefix("chat:")
///         .max_messages(500)
///         .max_age(Duration::from_secs(120)),
/// ));
/// assert!(hub.config().history_config().covers("chat:lobby"));
/// assert!(!hub.config().history_config().covers("ticker"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    prefixes: Vec<String>,
    max_messages: usize,
    max_age: Duration,
    stamp: Option<Stamp>,
}

/// An application's function that puts a message's position into its payload (see
/// [`HistoryConfig::stamp`]).
pub type StampFn = fn(StreamPosition, &SocketMessage) -> SocketMessage;

/// A [`StampFn`], compared by address.
#[derive(Clone, Copy, Debug)]
struct Stamp(StampFn);

impl PartialEq for Stamp {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::fn_addr_eq(self.0, other.0)
    }
}

impl Eq for Stamp {}

impl Default for HistoryConfig {
    /// No room has history; when enabled, 1,000 messages per room, kept up to 5 minutes.
    fn default() -> Self {
        Self {
            prefixes: Vec::new(),
            max_messages: 1_000,
            max_age: Duration::from_secs(300),
            stamp: None,
        }
    }
}

impl HistoryConfig {
    /// Rooms whose name starts with `prefix` keep a history (`""`: every room). May be given
    /// several times.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefixes.push(prefix.into());
        self
    }

    /// Messages kept per room (at least 1; at most 2^24).
    pub fn max_messages(mut self, n: usize) -> Self {
        self.max_messages = n.clamp(1, 1 << 24);
        self
    }

    /// How old a message may be and still be recovered.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// The function that writes a message's position into its payload, run on the messages
    /// of a room with history right after their offset is assigned: on one node for
    /// [`broadcast_to_room`](crate::StreamHub::broadcast_to_room)`[_except]` (a message made
    /// by [`publish_to_room`](crate::StreamHub::publish_to_room)'s `build`, which saw its
    /// position, is left alone); with a cluster for every message, on every node, as it
    /// comes back from Redis, where its offset is assigned. Without a stamp the payload is
    /// left as the publisher made it.
    ///
    /// Why a hub-level function and not only the closure: a closure can only run in the
    /// publishing process, before the offset is known; across a cluster the offset is known
    /// only inside Redis, so each receiving node must write it in.
    ///
    /// # Examples
    ///
    /// ```
    /// use nucleus_stream::{HistoryConfig, SocketMessage, StreamPosition};
    /// fn stamp(pos: StreamPosition, msg: &SocketMessage) -> SocketMessage {
    ///     SocketMessage::text(format!("{}@{}", msg.as_text().unwrap_or(""), pos.offset))
    /// }
    /// let config = HistoryConfig::default().prefix("").stamp(stamp);
    /// let out = config.stamped(StreamPosition::new(1, 7), SocketMessage::text("hi"));
    /// assert_eq!(out, SocketMessage::text("hi@7"));
    /// ```
    pub fn stamp(mut self, stamp: StampFn) -> Self {
        self.stamp = Some(Stamp(stamp));
        self
    }

    /// `msg` with its position written in by the [`stamp`](Self::stamp) (unchanged without
    /// one).
    pub fn stamped(&self, pos: StreamPosition, msg: SocketMessage) -> SocketMessage {
        match self.stamp {
            Some(Stamp(stamp)) => stamp(pos, &msg),
            None => msg,
        }
    }

    /// Whether a [`stamp`](Self::stamp) is set.
    pub fn has_stamp(&self) -> bool {
        self.stamp.is_some()
    }

    /// Whether the room `name` keeps a history under this configuration.
    pub fn covers(&self, name: &str) -> bool {
        self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// Whether any room keeps a history.
    pub fn is_enabled(&self) -> bool {
        !self.prefixes.is_empty()
    }

    /// Messages kept per room ([`max_messages`](Self::max_messages)).
    pub fn message_limit(&self) -> usize {
        self.max_messages
    }

    /// The age limit ([`max_age`](Self::max_age)).
    pub fn age_limit(&self) -> Duration {
        self.max_age
    }
}

/// A position in a room's history: the log's epoch and a message's offset in it.
///
/// Offsets start at 1; `offset: 0` means "before the first message".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// Identifies one continuous log of the room; a new log (hub restart, store restart)
    /// has a new epoch.
    pub epoch: u64,
    /// The message's offset in that log.
    pub offset: u64,
}

impl StreamPosition {
    /// The position `offset` in the log `epoch`.
    pub fn new(epoch: u64, offset: u64) -> Self {
        Self { epoch, offset }
    }
}

/// What a join with a position got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Whether everything after the position was replayed (then the socket has missed
    /// nothing). `false`: the position is not covered (other epoch, too old, evicted, or
    /// ahead of the log); nothing was replayed and the socket only gets the live stream.
    pub recovered: bool,
    /// Messages replayed into the socket's queue.
    pub replayed: u64,
    /// The room's position after the replay: the last message the socket has (the live
    /// stream continues at `offset + 1`).
    pub position: StreamPosition,
    /// Whether the socket joined now (`false`: it already was a member).
    pub joined: bool,
}

/// One stored message.
pub(crate) struct Stored {
    at: Instant,
    /// Shared with the queues it was delivered or replayed to.
    msg: SharedMessage,
    /// The socket the broadcast excludes (held so its address is not reused meanwhile).
    except: Option<Arc<SocketEntry>>,
}

/// One slot of the ring.
///
/// Why a plain pointer is enough (no arc-swap, no reference count): a slot is overwritten
/// only by the publisher of `offset + capacity`, which waits until that offset is within
/// `headroom` of `delivered`, i.e. until `offset <= delivered - max_messages`. Every read is
/// of an offset in `(delivered - max_messages, delivered + 1]`, made by the deliverer-role
/// holder, during which `delivered` does not move. So a slot is never overwritten (and its
/// message never freed) while it is read.
struct Slot {
    /// The offset of the message `stored` points to; 0 while empty. Invariant: stored (Release)
    /// after `stored`, so a reader that sees its offset here sees its message there.
    offset: AtomicU64,
    /// Owns a `Box<Stored>` (null while empty); replaced by the slot's next publisher.
    stored: AtomicPtr<Stored>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // ORDERING: `&mut self`: no other thread can touch the slot any more.
        let raw = self.stored.swap(std::ptr::null_mut(), Ordering::Acquire);
        if !raw.is_null() {
            // SAFETY: `raw` came from `Box::into_raw` and was swapped out exactly once.
            drop(unsafe { Box::from_raw(raw) });
        }
    }
}

/// A room's bounded log and its deliverer protocol (see the module docs).
pub(crate) struct RoomLog {
    /// The log's epoch. Invariant: changes only in [`reset`](Self::reset), by the deliverer-role
    /// holder (cluster logs follow Redis's epoch); a single node's log never changes it.
    epoch: AtomicU64,
    /// The last offset handed out. Invariant: only grows; offsets `1..=assigned` are taken.
    assigned: AtomicU64,
    /// The last offset fanned out to the live members. Invariant: written only by the holder
    /// of the deliverer role; `delivered <= assigned`; slots `delivered+1..` are not delivered.
    delivered: AtomicU64,
    /// Delivery requests not yet served, plus 1 while a joiner holds the role. Invariant:
    /// non-zero exactly while some thread holds the deliverer role.
    pending: AtomicUsize,
    slots: Box<[Slot]>,
    mask: u64,
    /// How far `assigned` may run ahead of `delivered` (`capacity - max_messages`).
    headroom: u64,
    max_messages: u64,
    max_age: Duration,
    /// Cluster logs: 1 after the node's subscription was (re)built, until the next message
    /// appended (which shows any gap). Invariant: while set, the ring's top may lag Redis by
    /// what was published during the reconnect, so a join is not served from the ring alone.
    stale: AtomicU64,
}

pub(crate) fn fresh_epoch() -> u64 {
    // A random 63-bit value (JSON-safe as an integer up to 2^63; never 0): std's randomly keyed
    // hasher over the clock and a process-wide counter.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    // ORDERING: only uniqueness of the counted value matters.
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    (h.finish() >> 11).max(1)
}

impl RoomLog {
    pub(crate) fn new(config: &HistoryConfig) -> Self {
        Self::with_epoch(config, fresh_epoch())
    }

    pub(crate) fn with_epoch(config: &HistoryConfig, epoch: u64) -> Self {
        let max_messages = config.max_messages.max(1);
        let capacity = (2 * max_messages).next_power_of_two();
        Self {
            epoch: AtomicU64::new(epoch),
            assigned: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            slots: (0..capacity)
                .map(|_| Slot {
                    offset: AtomicU64::new(0),
                    stored: AtomicPtr::new(std::ptr::null_mut()),
                })
                .collect(),
            mask: capacity as u64 - 1,
            headroom: (capacity - max_messages) as u64,
            max_messages: max_messages as u64,
            max_age: config.max_age,
            stale: AtomicU64::new(0),
        }
    }

    /// The last delivered position (what a joiner without `since` starts after).
    pub(crate) fn position(&self) -> StreamPosition {
        // ORDERING: Acquire pairs with the deliverer's Release store; a snapshot value.
        StreamPosition::new(self.epoch(), self.delivered.load(Ordering::Acquire))
    }

    fn epoch(&self) -> u64 {
        // ORDERING: written only by the role holder (whose hand-over through `pending` orders
        // it for the next holder); publishers of a single node's log read a value that never
        // changes.
        self.epoch.load(Ordering::Relaxed)
    }

    fn slot(&self, offset: u64) -> &Slot {
        &self.slots[(offset & self.mask) as usize]
    }

    /// The stored message of `offset`, if its slot holds it.
    ///
    /// # Safety
    ///
    /// The caller holds the deliverer role and `offset` is in
    /// `(delivered - max_messages, delivered + 1]` (see [`Slot`]): then the slot is not
    /// overwritten while the returned reference lives (the caller drops it before the role).
    unsafe fn read(&self, offset: u64) -> Option<&Stored> {
        let slot = self.slot(offset);
        // ORDERING: Acquire pairs with the publisher's Release store of the offset.
        if slot.offset.load(Ordering::Acquire) != offset {
            return None;
        }
        // ORDERING: ordered after the publisher's swap by the offset's Release/Acquire.
        let raw = slot.stored.load(Ordering::Acquire);
        // SAFETY: non-null once an offset is stored, and not freed meanwhile (contract).
        unsafe { raw.as_ref() }
    }

    /// Appends the message `build` makes for its position and delivers it (or leaves it to
    /// the current deliverer). `deliver` fans one message out to the room's current members.
    /// Returns the message's position and what this call delivered (its own message and any
    /// others it delivered as the deliverer; zero if another thread delivers them).
    pub(crate) fn publish(
        &self,
        build: impl FnOnce(StreamPosition) -> SocketMessage,
        except: Option<Arc<SocketEntry>>,
        deliver: &dyn Fn(&SharedMessage, *const SocketEntry) -> BroadcastReport,
    ) -> (StreamPosition, BroadcastReport) {
        // ORDERING: only uniqueness of offsets matters; the slot store and `pending` carry the
        // publication.
        let offset = self.assigned.fetch_add(1, Ordering::Relaxed) + 1;
        // Backpressure only when the deliverer is `headroom` messages behind: the slot we
        // would overwrite must be outside the kept window. ORDERING: Acquire pairs with the
        // deliverer's Release store of `delivered`.
        while offset > self.delivered.load(Ordering::Acquire) + self.headroom {
            spin_hint();
        }
        let pos = StreamPosition::new(self.epoch(), offset);
        let msg = build(pos);
        let slot = self.slot(offset);
        let raw = Box::into_raw(Box::new(Stored {
            at: Instant::now(),
            msg: SharedMessage::new(msg),
            except,
        }));
        // ORDERING: AcqRel: Acquire takes ownership of the previous message (stored by the
        // publisher of `offset - capacity`); Release is carried on by the offset store.
        let old = slot.stored.swap(raw, Ordering::AcqRel);
        // ORDERING: Release publishes the message to the reader that sees this offset.
        slot.offset.store(offset, Ordering::Release);
        if !old.is_null() {
            // SAFETY: `old` came from `Box::into_raw` and was swapped out exactly once; it
            // holds offset `offset - capacity`, outside every reader's range (see `Slot`).
            drop(unsafe { Box::from_raw(old) });
        }
        let mut report = BroadcastReport::default();
        // ORDERING: AcqRel: Release publishes our slot to the deliverer that reads this count;
        // Acquire makes us see the slots of the requests we may serve.
        if self.pending.fetch_add(1, Ordering::AcqRel) == 0 {
            report = self.serve(1, deliver);
        }
        (pos, report)
    }

    /// Runs the deliverer loop holding `held` requests; returns when none is left.
    fn serve(
        &self,
        mut held: usize,
        deliver: &dyn Fn(&SharedMessage, *const SocketEntry) -> BroadcastReport,
    ) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        loop {
            // ORDERING: only the role holder writes `delivered`; the role was handed over
            // through `pending` (AcqRel), which orders the previous holder's store before us.
            let mut done = self.delivered.load(Ordering::Relaxed);
            loop {
                let next = done + 1;
                // SAFETY: we hold the role and `next == delivered + 1`.
                let Some(stored) = (unsafe { self.read(next) }) else {
                    break; // not written yet: its publisher will request delivery
                };
                let except = stored.except.as_ref().map_or(std::ptr::null(), Arc::as_ptr);
                report.add(deliver(&stored.msg, except));
                done = next;
                // ORDERING: Release pairs with joiners' and spinning publishers' Acquire loads.
                self.delivered.store(done, Ordering::Release);
            }
            // ORDERING: AcqRel: Release hands our `delivered` to the next holder; Acquire
            // makes the slots of the requests counted meanwhile visible to our next pass.
            let before = self.pending.fetch_sub(held, Ordering::AcqRel);
            if before == held {
                return report;
            }
            held = before - held;
        }
    }

    /// Joins a socket at `since`: takes the deliverer role, runs `join` (which adds the
    /// socket to the room's members), replays `(since, delivered]` through `replay` if the
    /// position is covered, then serves what was published meanwhile.
    pub(crate) fn join_since<E>(
        &self,
        since: Option<StreamPosition>,
        join: impl FnOnce() -> Result<bool, E>,
        mut replay: impl FnMut(&SharedMessage),
        deliver: &dyn Fn(&SharedMessage, *const SocketEntry) -> BroadcastReport,
    ) -> Result<Recovery, E> {
        #[cfg(not(nucleus_loom_planted_bug_history))]
        // ORDERING: AcqRel/Acquire: taking the role orders the previous holder's `delivered`
        // store and the slots it served before our reads.
        while self
            .pending
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            spin_hint();
        }
        // PLANTED BUG (`--cfg nucleus_loom_planted_bug_history` only): the joiner reads the
        // cursor and joins without the deliverer role, so a deliverer that loaded the member
        // snapshot before the join but advances `delivered` after our read delivers a message
        // neither live nor replayed: a gap. loom_tests/history.rs must fail.
        let joined = join();
        let outcome = joined.map(|joined| {
            // ORDERING: we hold the role, so `delivered` is stable and ours to read.
            let top = self.delivered.load(Ordering::Acquire);
            let position = StreamPosition::new(self.epoch(), top);
            let (recovered, replayed) = match since {
                // Already a member: it has had everything live; nothing to replay.
                None => (false, 0),
                Some(_) if !joined => (false, 0),
                Some(since) => match self.covered(since, top) {
                    false => (false, 0),
                    true => {
                        for offset in since.offset + 1..=top {
                            // SAFETY: we hold the role and `covered` checked the range is
                            // within the window.
                            if let Some(stored) = unsafe { self.read(offset) } {
                                replay(&stored.msg);
                            }
                        }
                        (true, top - since.offset)
                    }
                },
            };
            Recovery {
                recovered,
                replayed,
                position,
                joined,
            }
        });
        #[cfg(not(nucleus_loom_planted_bug_history))]
        self.serve(1, deliver);
        #[cfg(nucleus_loom_planted_bug_history)]
        let _ = deliver;
        outcome
    }

    /// Takes the deliverer role (waits for the current holder's batch).
    fn take_role(&self) {
        // ORDERING: AcqRel/Acquire: taking the role orders the previous holder's `delivered`
        // store, epoch and the slots it served before our reads.
        while self
            .pending
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            spin_hint();
        }
    }

    /// Starts the ring over at `(epoch, base)`: nothing kept, the next offset is `base + 1`.
    /// Called by the role holder of a cluster log only (no publisher assigns offsets on it).
    fn reset(&self, epoch: u64, base: u64) {
        for slot in self.slots.iter() {
            // ORDERING: read only by role holders, which the role hand-over orders after us.
            slot.offset.store(0, Ordering::Relaxed);
        }
        // ORDERING: see `epoch()`.
        self.epoch.store(epoch, Ordering::Relaxed);
        // ORDERING: only uniqueness matters (and a cluster log has no local publisher).
        self.assigned.store(base, Ordering::Relaxed);
        // ORDERING: Release pairs with joiners' Acquire loads.
        self.delivered.store(base, Ordering::Release);
    }

    /// Cluster logs: the node's subscription was (re)built; see `stale`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn mark_stale(&self) {
        // ORDERING: read under the role (whose hand-over orders it) or as a hint; a join that
        // misses a concurrent mark races the reconnect itself, as any member does.
        self.stale.store(1, Ordering::Relaxed);
    }

    /// Cluster logs: appends the message Redis put at `pos` and delivers it, in the order the
    /// node's subscription receives them. A message at or below the ring's top in the same
    /// epoch is a duplicate and dropped; another epoch, or a gap (the subscription missed
    /// messages), starts the ring over just below `pos`. Returns whether it was delivered and
    /// what the delivery reached. Takes the deliverer role, so it may wait for a joiner's
    /// replay from the ring (never for I/O).
    #[cfg_attr(not(any(feature = "redis", nucleus_loom)), allow(dead_code))]
    pub(crate) fn append_at(
        &self,
        pos: StreamPosition,
        msg: SocketMessage,
        except: Option<Arc<SocketEntry>>,
        deliver: &dyn Fn(&SharedMessage, *const SocketEntry) -> BroadcastReport,
    ) -> Option<BroadcastReport> {
        if pos.offset == 0 {
            return None;
        }
        self.take_role();
        // ORDERING: we hold the role.
        let top = self.delivered.load(Ordering::Acquire);
        if pos.epoch == self.epoch() && pos.offset <= top {
            self.serve(1, deliver);
            return None;
        }
        if pos.epoch != self.epoch() || pos.offset != top + 1 {
            self.reset(pos.epoch, pos.offset - 1);
        }
        // ORDERING: see `mark_stale`.
        self.stale.store(0, Ordering::Relaxed);
        // ORDERING: see `reset`.
        self.assigned.store(pos.offset, Ordering::Relaxed);
        let raw = Box::into_raw(Box::new(Stored {
            at: Instant::now(),
            msg: SharedMessage::new(msg),
            except,
        }));
        let slot = self.slot(pos.offset);
        // ORDERING: as in `publish`.
        let old = slot.stored.swap(raw, Ordering::AcqRel);
        // ORDERING: as in `publish`.
        slot.offset.store(pos.offset, Ordering::Release);
        if !old.is_null() {
            // SAFETY: `old` came from `Box::into_raw` and was swapped out exactly once; we hold
            // the role and it held `pos.offset - capacity` (or a reset's leftover), outside
            // every reader's range, and readers only read while holding the role.
            drop(unsafe { Box::from_raw(old) });
        }
        Some(self.serve(1, deliver))
    }

    /// Cluster logs: joins at `since` if the ring covers it (replaying `(since, top]` from
    /// the ring, then live). `idle()` says whether the room has no local member: then the
    /// node may not have listened to the room meanwhile, so without `seed` (the caller has
    /// not read up to `since` from Redis while holding the subscription) the ring is not
    /// trusted. With `seed`, if the ring is behind `since` or in another epoch and idle, it
    /// starts over at `since` and the socket joins there. Otherwise returns `Ok(None)`
    /// without joining.
    pub(crate) fn join_covered<E>(
        &self,
        since: StreamPosition,
        seed: bool,
        idle: impl FnOnce() -> bool,
        join: impl FnOnce() -> Result<bool, E>,
        mut replay: impl FnMut(&SharedMessage),
        deliver: &dyn Fn(&SharedMessage, *const SocketEntry) -> BroadcastReport,
    ) -> Result<Option<Recovery>, E> {
        // PLANTED BUG (`--cfg nucleus_loom_planted_bug_history` only): as in `join_since`, the
        // joiner does not take the role; loom_tests/history.rs's cluster models must fail.
        #[cfg(not(nucleus_loom_planted_bug_history))]
        self.take_role();
        // ORDERING: we hold the role.
        let mut top = self.delivered.load(Ordering::Acquire);
        let idle = idle();
        // ORDERING: see `mark_stale`.
        let stale = self.stale.load(Ordering::Relaxed) != 0;
        if !self.covered(since, top) || (!seed && (idle || stale)) {
            let behind = since.epoch != self.epoch() || since.offset > top;
            if seed && behind && idle {
                self.reset(since.epoch, since.offset);
                top = since.offset;
            } else {
                self.release(deliver);
                return Ok(None);
            }
        }
        let outcome = join().map(|joined| {
            let mut replayed = 0;
            if joined {
                for offset in since.offset + 1..=top {
                    // SAFETY: we hold the role and `covered` checked the range.
                    if let Some(stored) = unsafe { self.read(offset) } {
                        replay(&stored.msg);
                        replayed += 1;
                    }
                }
            }
            Some(Recovery {
                recovered: joined,
                replayed,
                position: StreamPosition::new(self.epoch(), top),
                joined,
            })
        });
        self.release(deliver);
        outcome
    }

    /// Hands the role on (serving what was published meanwhile), after `join_covered`.
    fn release(&self, deliver: &dyn Fn(&SharedMessage, *const SocketEntry) -> BroadcastReport) {
        #[cfg(not(nucleus_loom_planted_bug_history))]
        self.serve(1, deliver);
        #[cfg(nucleus_loom_planted_bug_history)]
        let _ = deliver;
    }

    /// Whether every message in `(since, top]` is in the ring and young enough. Called by the
    /// role holder (so `top == delivered` does not move).
    fn covered(&self, since: StreamPosition, top: u64) -> bool {
        if since.epoch != self.epoch() || since.offset > top {
            return false;
        }
        if since.offset == top {
            return true;
        }
        if top - since.offset > self.max_messages {
            return false;
        }
        // Slots in the window are never overwritten while `delivered` stays put (headroom),
        // so checking the first and last offsets proves the whole range.
        // SAFETY: we hold the role; both offsets are within `max_messages` of `top`.
        let (first, last) = unsafe { (self.read(since.offset + 1), self.read(top)) };
        first.is_some_and(|first| first.at.elapsed() <= self.max_age) && last.is_some()
    }
}
