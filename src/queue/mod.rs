//! The per-socket outbound queue: bounded, lock-free on the push side, transport-agnostic.
//!
//! [`channel`] makes a [`Sender`] / [`Receiver`] pair. The hub pushes into the sender (a
//! [`WebSocket`](crate::WebSocket) owns one); whatever carries bytes to the client — the
//! bundled server, an axum handler, a test — drains the receiver, one message at a time
//! ([`Receiver::recv`]) or everything queued at once ([`Receiver::recv_many`]).
//!
//! # Bounds and overflow
//!
//! A queue is bounded both in messages and in payload bytes ([`QueueConfig`]). A push never
//! blocks and never awaits: when it would exceed a bound the queue's [`OverflowPolicy`]
//! applies — close the queue as a slow consumer (the default), drop the new message, or drop
//! the oldest queued messages to make room. A single message larger than the byte bound can
//! never fit; it is refused as [`TrySendError::Full`] under every policy.
//!
//! # Memory
//!
//! An idle queue holds no message storage: segments of 7 slots are allocated as messages
//! arrive and freed as the consumer moves past them ([`segments`]); a drained queue keeps at
//! most one. What an idle connection's queue costs is its header, one `Arc` of 112 bytes, and
//! once messages went through, that segment: 72 B (`tests/queue_memory.rs`, counting
//! allocator).
//!
//! A slot holds a thin handle (`SharedMessage`, a counted pointer to the message:
//! `src/shared_message.rs`), not the 40-byte message: a broadcast wraps its message once and
//! pushes a handle to each recipient, taking all their references with one `fetch_add`. A segment is
//! 7 handles + its `next` pointer + 7 one-byte ready flags = 72 B (one 80-byte malloc chunk).
//! [`Sender::try_send`] wraps its message (one small allocation per direct send), and the
//! public receive methods hand the message back out of its handle (moved if it was the last,
//! else a `Bytes` reference-count bump); the bundled server's writer takes the handle itself.
//!
//! Until this storage, items lived in `crossbeam_queue::SegQueue`: its head and tail are
//! padded to 128 bytes each (a 512-byte header) and it keeps its last 31-slot block (504 B),
//! 1,016 B per drained queue against 184 B now.
//!
//! # How it works
//!
//! Items live in [`segments::Segments`], the crate's lock-free segment queue (its module docs
//! give the protocol; `loom_tests/segments.rs` checks it). One atomic word packs the queued
//! byte count, the queued message count and a CLOSED bit; a producer reserves room with a
//! compare-and-swap on it before pushing, so the bound is exact and the close check is atomic
//! with the reservation. The consumer releases room after popping. Only the consumer pops,
//! except under [`OverflowPolicy::DropOldest`], where producers evict too: then every pop,
//! the consumer's included, goes through the storage's pop flag. The wake-up protocol is an
//! `AtomicWaker`: the consumer registers, then re-checks; a producer pushes, then wakes. The
//! loom models in `loom_tests/` check it.
//!
//! # Waking only on empty → non-empty
//!
//! A producer wakes the consumer only if its reservation found **no** message counted (the
//! compare-and-swap returns the previous state, so this costs nothing); pushes into a queue
//! that already holds or awaits messages skip the waker's two read-modify-writes. The consumer
//! parks (returns `Pending` without waking itself) only if, after registering its waker and
//! failing to pop, it loads a state with zero messages counted. Why no wake-up is lost:
//!
//! - Every write to the state word is a read-modify-write, so the first one after the value
//!   the consumer loaded reads exactly that value. If it is a reservation, it sees zero
//!   messages and wakes; the `AtomicWaker` protocol (both sides are read-modify-writes on its
//!   state) then either hands it the registered waker or makes the consumer's re-check see the
//!   item. A close always wakes.
//! - If the consumer sees messages counted but cannot pop one, a reservation's item is not
//!   visible yet and its producer may have skipped the wake (it saw an earlier message). The
//!   consumer then does not park: it asks to be polled again (`wake_by_ref`), a bounded wait
//!   on a producer that is between its reservation and its push.
//! - A consumer that popped and released room reads, by coherence, a state at least as new as
//!   its own release, so it sees any reservation that skipped the wake because of the message
//!   it just took.

use std::fmt;
use std::future::poll_fn;
use std::task::{Context, Poll};

use crate::atomic_waker::AtomicWaker;
use crate::message::SocketMessage;
use crate::shared_message::SharedMessage;

pub(crate) mod segments;
use crate::sync::{Arc, AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// Bits of the state word holding queued payload bytes.
const BYTES_BITS: u32 = 40;
const BYTES_MASK: u64 = (1 << BYTES_BITS) - 1;
/// One queued message, in the state word.
const ONE_MESSAGE: u64 = 1 << BYTES_BITS;
/// Bits of the state word holding the queued message count (bits 40..63).
const MESSAGES_MASK: u64 = ((1 << 23) - 1) << BYTES_BITS;
/// Set once, never cleared: no push succeeds after it.
const CLOSED: u64 = 1 << 63;

/// The largest `max_messages` a queue accepts (the field is 23 bits wide).
pub const MAX_MESSAGES_LIMIT: usize = (1 << 23) - 1;
/// The largest `max_bytes` a queue accepts (the field is 40 bits wide: 1 TiB).
pub const MAX_BYTES_LIMIT: usize = (1 << BYTES_BITS) - 1;

/// What a full queue does with a new message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Close the queue with [`CloseReason::SlowConsumer`]: the transport then disconnects the
    /// client (the bundled server sends close code 1008). The default, as in Centrifugo: a
    /// client that cannot keep up is told so instead of silently missing messages.
    #[default]
    Disconnect,
    /// Keep what is queued and drop the new message.
    DropNewest,
    /// Drop the oldest queued messages until the new one fits.
    DropOldest,
}

/// Bounds and overflow policy of one outbound queue.
///
/// # Examples
///
/// ```
/// use nucleus_stream::{OverflowPolicy, QueueConfig};
/// let config = QueueConfig::default()
///     .max_messages(256)
///     .max_bytes(64 * 1024)
///     .policy(OverflowPolicy::DropOldest);
/// let (tx, rx) = nucleus_stream::channel(config);
/// # drop((tx, rx));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    max_messages: usize,
    max_bytes: usize,
    policy: OverflowPolicy,
}

impl Default for QueueConfig {
    /// 4,096 messages, 1 MiB of payload, [`OverflowPolicy::Disconnect`].
    fn default() -> Self {
        Self {
            max_messages: 4096,
            max_bytes: 1 << 20,
            policy: OverflowPolicy::Disconnect,
        }
    }
}

impl QueueConfig {
    /// At most this many queued messages (clamped to `1..=MAX_MESSAGES_LIMIT`).
    pub fn max_messages(mut self, n: usize) -> Self {
        self.max_messages = n.clamp(1, MAX_MESSAGES_LIMIT);
        self
    }

    /// At most this many queued payload bytes (clamped to `1..=MAX_BYTES_LIMIT`).
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n.clamp(1, MAX_BYTES_LIMIT);
        self
    }

    /// What happens when a push would exceed a bound.
    pub fn policy(mut self, policy: OverflowPolicy) -> Self {
        self.policy = policy;
        self
    }

    // Readers: named for what they return, without `get_` (setters own the setting names;
    // `docs/design.md` "Configuration").

    /// The message bound ([`max_messages`](Self::max_messages)).
    pub fn message_limit(&self) -> usize {
        self.max_messages
    }

    /// The byte bound ([`max_bytes`](Self::max_bytes)).
    pub fn byte_limit(&self) -> usize {
        self.max_bytes
    }

    /// The overflow policy ([`policy`](Self::policy)).
    pub fn overflow_policy(&self) -> OverflowPolicy {
        self.policy
    }
}

/// Why a queue was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`Sender::close`] or [`Receiver::close`] was called, or every sender was dropped.
    Closed,
    /// The queue overflowed under [`OverflowPolicy::Disconnect`].
    SlowConsumer,
    /// The socket was unregistered from its hub.
    Unregistered,
    /// The receiver was dropped: nobody will read what is pushed.
    ReceiverDropped,
}

impl CloseReason {
    fn encode(self) -> u8 {
        match self {
            Self::Closed => 1,
            Self::SlowConsumer => 2,
            Self::Unregistered => 3,
            Self::ReceiverDropped => 4,
        }
    }

    fn decode(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Closed,
            2 => Self::SlowConsumer,
            3 => Self::Unregistered,
            4 => Self::ReceiverDropped,
            _ => return None,
        })
    }
}

/// A message that could not be queued, given back to the caller.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The message was refused and the queue stays open: it is larger than the byte bound
    /// alone (under every policy), or the queue is full under [`OverflowPolicy::DropNewest`],
    /// or [`OverflowPolicy::DropOldest`] could not make room. Under
    /// [`OverflowPolicy::Disconnect`] a full queue is closed instead and the push returns
    /// [`TrySendError::Closed`].
    #[error("outbound queue is full")]
    Full(SocketMessage),
    /// The queue is closed.
    #[error("outbound queue is closed")]
    Closed(SocketMessage),
}

impl TrySendError {
    /// The message that was not queued.
    pub fn into_inner(self) -> SocketMessage {
        match self {
            Self::Full(m) | Self::Closed(m) => m,
        }
    }
}

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing is queued right now.
    #[error("outbound queue is empty")]
    Empty,
    /// The queue is closed and fully drained.
    #[error("outbound queue is closed")]
    Closed,
}

/// How a successful push went, for broadcast accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Queued with room to spare.
    Plain,
    /// Queued after dropping this many older messages (`OverflowPolicy::DropOldest`).
    DroppedOldest(u32),
}

/// Why [`Shared::push`] refused a message, with the handle given back (the crate-internal
/// twin of [`TrySendError`], which holds the message itself).
#[derive(Debug)]
pub(crate) enum PushError {
    /// As [`TrySendError::Full`].
    Full(SharedMessage),
    /// As [`TrySendError::Closed`].
    Closed(SharedMessage),
}

impl From<PushError> for TrySendError {
    /// Takes the message back out of its handle: moved if no other queue shares it (a
    /// [`Sender::try_send`]), else a clone (a `Bytes` reference-count bump).
    fn from(refused: PushError) -> Self {
        match refused {
            PushError::Full(msg) => Self::Full(msg.into_message()),
            PushError::Closed(msg) => Self::Closed(msg.into_message()),
        }
    }
}

/// Makes a bounded outbound queue: the producer half for a [`WebSocket`](crate::WebSocket),
/// the consumer half for the transport. Allocates one small shared header and no message
/// storage until messages arrive.
///
/// # Examples
///
/// ```
/// use nucleus_stream::{channel, QueueConfig, SocketMessage};
/// let (tx, mut rx) = channel(QueueConfig::default());
/// tx.try_send(SocketMessage::text("hi")).unwrap();
/// assert_eq!(rx.try_recv().unwrap(), SocketMessage::text("hi"));
/// ```
pub fn channel(config: QueueConfig) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        items: Items::new(),
        state: AtomicU64::new(0),
        reason: AtomicU8::new(0),
        waker: AtomicWaker::new(),
        senders: AtomicUsize::new(1),
        dropped: AtomicU64::new(0),
        // At most `MAX_MESSAGES_LIMIT` (23 bits): `max_messages` clamps it.
        max_messages: config.max_messages as u32,
        max_bytes: config.max_bytes as u64,
        policy: config.policy,
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

/// The size of a burst for [`Shared::push_burst`]: computed once per burst, used for every
/// recipient's queue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BurstSize {
    messages: u64,
    bytes: u64,
}

impl BurstSize {
    /// The burst of these messages.
    pub(crate) fn of(msgs: &[SharedMessage]) -> Self {
        Self {
            messages: msgs.len() as u64,
            bytes: msgs.iter().map(|m| m.len() as u64).sum(),
        }
    }

    /// The burst's payload bytes.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The fields are in the order a push reads them (`repr(C)`): the storage's tail, the state
/// word and the bounds first, in the header's first 46 bytes, so that a push touches one cache
/// line or two, both prefetched by a broadcast ([`Shared::PUSH_LINES`]); the waker (written
/// by a push only when the queue was empty) and the rarely written counters after them.
/// Measured against the compiler's order (which spread those fields over all 88 bytes): CPU
/// per delivery 0.99× in one room of 1,000 and 0.97× in 200 rooms × 11 (14 interleaved pairs
/// each, `BENCHMARKS.md`, run 23).
#[repr(C)]
pub(crate) struct Shared {
    items: Items,
    /// Packed: bits 0..40 queued payload bytes, bits 40..63 queued messages, bit 63 CLOSED.
    /// Invariant: the counts cover every message in `items` plus reservations whose push is
    /// in flight; a producer adds before pushing, the consumer subtracts after popping, so the
    /// counts never underflow and never exceed the bounds. CLOSED is never cleared.
    state: AtomicU64,
    max_bytes: u64,
    /// `u32`, so that it shares a word with `policy` and `reason`: the header is 88 bytes,
    /// a 112-byte malloc chunk with its `Arc` counts (a 128-byte one at 96).
    max_messages: u32,
    policy: OverflowPolicy,
    /// The first close reason (`CloseReason::encode`), 0 while open. Written once, before the
    /// CLOSED bit is set, so whoever observes CLOSED observes a reason.
    reason: AtomicU8,
    waker: AtomicWaker,
    /// Live `Sender` handles; the last one to go closes the queue.
    senders: AtomicUsize,
    /// Messages dropped by the overflow policy (statistics only, never used for control).
    dropped: AtomicU64,
}

// What the layout promises: everything a push reads in the header lies within 64 bytes, so
// in at most two cache lines, the two `PUSH_LINES` prefetches.
#[cfg(not(nucleus_loom))]
const _: () = assert!(Shared::PUSH_LINES[1] - Shared::PUSH_LINES[0] < 64);

impl Shared {
    /// Byte offsets of the first and the last byte a push reads or writes in the header (the
    /// storage's tail, then the state word and the bounds, up to `reason`): at most two cache
    /// lines. For prefetching only: a wrong offset wastes a hint, nothing else.
    #[cfg(not(nucleus_loom))]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) const PUSH_LINES: [usize; 2] = [
        std::mem::offset_of!(Shared, items)
            + std::mem::offset_of!(Items, queue)
            + segments::Segments::<SharedMessage>::TAIL_OFFSET,
        std::mem::offset_of!(Shared, reason),
    ];

    /// Pushes without ever blocking. On `Err` the message is given back with the reason.
    pub(crate) fn push(&self, msg: SharedMessage) -> Result<Queued, PushError> {
        let size = msg.len() as u64;
        if size > self.max_bytes {
            // ORDERING: statistics counter, no data depends on it.
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(PushError::Full(msg));
        }
        let mut dropped_oldest = 0u32;
        let mut spins = 0u32;
        let was_empty: bool;
        // ORDERING: a stale first read only costs a failed compare-exchange.
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            if current & CLOSED != 0 {
                if dropped_oldest > 0 {
                    // We released room; the consumer may be waiting to observe the close.
                    self.waker.wake();
                }
                return Err(PushError::Closed(msg));
            }
            let messages = (current & MESSAGES_MASK) >> BYTES_BITS;
            let bytes = current & BYTES_MASK;
            if messages < u64::from(self.max_messages) && bytes + size <= self.max_bytes {
                // ORDERING: AcqRel orders the reservation with the consumer's release and with
                // close(); Acquire on failure so the retry sees the winner's state.
                match self.state.compare_exchange_weak(
                    current,
                    current + ONE_MESSAGE + size,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(previous) => {
                        was_empty = previous & MESSAGES_MASK == 0;
                        break;
                    }
                    Err(actual) => {
                        current = actual;
                        continue;
                    }
                }
            }
            match self.policy {
                OverflowPolicy::Disconnect => {
                    self.close(CloseReason::SlowConsumer);
                    return Err(PushError::Closed(msg));
                }
                OverflowPolicy::DropNewest => {
                    // ORDERING: statistics counter.
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return Err(PushError::Full(msg));
                }
                OverflowPolicy::DropOldest => {
                    if let Some(old) = self.items.pop_shared() {
                        self.release(old.len() as u64);
                        // ORDERING: statistics counter.
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        dropped_oldest += 1;
                    } else {
                        // Counted but not yet visible: another producer's push is in flight
                        // (or another thread is popping, or popped and has not released
                        // yet). Bounded wait.
                        spins += 1;
                        if spins > 64 {
                            // ORDERING: statistics counter.
                            self.dropped.fetch_add(1, Ordering::Relaxed);
                            if dropped_oldest > 0 {
                                self.waker.wake();
                            }
                            return Err(PushError::Full(msg));
                        }
                        crate::sync::spin_hint();
                    }
                    // ORDERING: Acquire, as the compare-exchange's failure load: the retry
                    // sees the state our release (or a concurrent one) left.
                    current = self.state.load(Ordering::Acquire);
                }
            }
        }
        self.items.push(msg);
        // Only the empty → non-empty transition can find the consumer parked (module docs).
        if was_empty || dropped_oldest > 0 {
            self.waker.wake();
        }
        Ok(if dropped_oldest == 0 {
            Queued::Plain
        } else {
            Queued::DroppedOldest(dropped_oldest)
        })
    }

    /// Pushes a burst of messages, in order, with one reservation of their room (one
    /// read-modify-write of the state word instead of one per message) and at most one
    /// wake-up, if the whole burst fits: `Ok` then, every handle queued. Otherwise (the
    /// queue is closed, or the burst does not fit in its bounds) nothing is queued and the
    /// handles come back untouched, for [`push`](Self::push) one at a time, which applies
    /// the overflow policy message by message.
    ///
    /// The reservation is the one `push` makes for one message, made for `burst.messages`
    /// at once: until the last handle is stored the consumer may see the count ahead of the
    /// items, as it may while single pushes are in flight, and the producer that found the
    /// queue empty wakes it once its last item is in.
    pub(crate) fn push_burst<I>(&self, burst: &BurstSize, handles: I) -> Result<(), I>
    where
        I: Iterator<Item = SharedMessage>,
    {
        // ORDERING: a stale first read only costs a failed compare-exchange.
        let mut current = self.state.load(Ordering::Relaxed);
        let was_empty = loop {
            let messages = (current & MESSAGES_MASK) >> BYTES_BITS;
            let bytes = current & BYTES_MASK;
            if current & CLOSED != 0
                || messages + burst.messages > u64::from(self.max_messages)
                || bytes + burst.bytes > self.max_bytes
            {
                return Err(handles);
            }
            // Within the bounds just checked, so no field overflows into the next.
            let add = burst.messages * ONE_MESSAGE + burst.bytes;
            // ORDERING: as push's reservation: AcqRel orders it with the consumer's release
            // and with close(); Acquire on failure so the retry sees the winner's state.
            match self.state.compare_exchange_weak(
                current,
                current + add,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(previous) => break previous & MESSAGES_MASK == 0,
                Err(actual) => current = actual,
            }
        };
        for msg in handles {
            self.items.push(msg);
        }
        if was_empty {
            self.waker.wake();
        }
        Ok(())
    }

    /// Gives back the room of one popped message.
    fn release(&self, size: u64) {
        self.release_many(1, size);
    }

    /// Gives back the room of `messages` popped messages of `bytes` in all: one
    /// read-modify-write for a whole batch.
    fn release_many(&self, messages: u64, bytes: u64) {
        // ORDERING: AcqRel pairs with producers' reservations (they must not see room that
        // the popped slots still occupy).
        self.state
            .fetch_sub(messages * ONE_MESSAGE + bytes, Ordering::AcqRel);
    }

    /// The consumer's pop. Only `Receiver` calls it (through `&mut self` methods, `poll_recv`,
    /// `discarding` and its drop), so it is the only popper unless producers pop too
    /// (`OverflowPolicy::DropOldest`), and then every pop takes the storage's pop flag.
    fn pop(&self) -> Option<SharedMessage> {
        let msg = self.take()?;
        self.release(msg.len() as u64);
        Some(msg)
    }

    /// [`pop`](Self::pop) without giving the room back: the caller releases it
    /// ([`release_many`](Self::release_many)) before it looks at the state again.
    fn take(&self) -> Option<SharedMessage> {
        if self.policy == OverflowPolicy::DropOldest {
            self.items.pop_shared()
        } else {
            // SAFETY: without DropOldest no producer pops, and the one `Receiver` is the only
            // caller (see `pop`).
            unsafe { self.items.pop() }
        }
    }

    /// Pops messages while `f` asks for more (it gets each one and returns whether to take
    /// another) and gives their room back with one read-modify-write. Returns how many were
    /// popped. The release comes before this returns, so the wake-up argument of the module
    /// docs (a consumer that popped and released reads a state at least as new as its
    /// release) holds as for single pops; meanwhile producers see the batch's room as still
    /// taken, as if it had been popped a moment later.
    fn pop_while(&self, mut f: impl FnMut(SharedMessage) -> bool) -> usize {
        let (mut messages, mut bytes) = (0u64, 0u64);
        while let Some(msg) = self.take() {
            messages += 1;
            bytes += msg.len() as u64;
            if !f(msg) {
                break;
            }
        }
        if messages > 0 {
            self.release_many(messages, bytes);
        }
        messages as usize
    }

    /// Closes the queue; the first reason sticks. Returns whether this call closed it.
    pub(crate) fn close(&self, reason: CloseReason) -> bool {
        // ORDERING: AcqRel/Acquire: the reason is published before CLOSED (below), and a
        // losing closer's read of the winner's reason orders it before its own fetch_or.
        let _ =
            self.reason
                .compare_exchange(0, reason.encode(), Ordering::AcqRel, Ordering::Acquire);
        // ORDERING: AcqRel publishes the reason with the bit.
        let previous = self.state.fetch_or(CLOSED, Ordering::AcqRel);
        self.waker.wake();
        previous & CLOSED == 0
    }

    fn close_reason(&self) -> Option<CloseReason> {
        // ORDERING: Acquire pairs with close(): seeing CLOSED means seeing the reason.
        if self.state.load(Ordering::Acquire) & CLOSED == 0 {
            return None;
        }
        // ORDERING: Acquire, for symmetry; the state load above already ordered it.
        CloseReason::decode(self.reason.load(Ordering::Acquire))
    }

    fn is_closed(&self) -> bool {
        // ORDERING: Acquire pairs with close().
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    fn len(&self) -> usize {
        // ORDERING: an instantaneous statistic.
        ((self.state.load(Ordering::Relaxed) & MESSAGES_MASK) >> BYTES_BITS) as usize
    }

    fn bytes(&self) -> usize {
        // ORDERING: an instantaneous statistic.
        (self.state.load(Ordering::Relaxed) & BYTES_MASK) as usize
    }

    fn dropped(&self) -> u64 {
        // ORDERING: statistics counter.
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether the queue was closed as a slow consumer, whose backlog is never delivered; if
    /// so, frees whatever is queued now (a push reserved before the close may still land
    /// later: the next call frees it).
    fn discarding(&self) -> bool {
        // ORDERING: Acquire pairs with close(): seeing CLOSED means seeing the reason.
        if self.state.load(Ordering::Acquire) & CLOSED == 0 {
            return false;
        }
        // ORDERING: ordered by the state load above.
        if CloseReason::decode(self.reason.load(Ordering::Acquire))
            != Some(CloseReason::SlowConsumer)
        {
            return false;
        }
        // The whole backlog's room comes back with one read-modify-write.
        self.pop_while(|_| true);
        true
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<SharedMessage>> {
        if self.discarding() {
            return Poll::Ready(None);
        }
        if let Some(msg) = self.pop() {
            return Poll::Ready(Some(msg));
        }
        self.waker.register(cx.waker());
        // Re-check after registering: a push that completed before the registration did not
        // see our waker, but its item is visible now.
        if let Some(msg) = self.pop() {
            return Poll::Ready(Some(msg));
        }
        // ORDERING: Acquire pairs with close() and with reservations.
        let state = self.state.load(Ordering::Acquire);
        if state & MESSAGES_MASK == 0 {
            if state & CLOSED != 0 {
                // Closed, and no reservation is in flight: nothing can arrive any more.
                return Poll::Ready(None);
            }
            // Parked: the next reservation reads zero messages and wakes us (module docs).
            return Poll::Pending;
        }
        // A counted message we cannot pop: its push is in flight, and its producer may have
        // skipped the wake. Try once more, else ask to be polled again rather than park.
        if let Some(msg) = self.pop() {
            return Poll::Ready(Some(msg));
        }
        // A spin-wait on another thread's progress: say so (loom must schedule the producer;
        // on hardware it is one pause instruction before the task yields to its executor).
        crate::sync::spin_hint();
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The producer half of an outbound queue. Cloning adds a producer; when the last one is
/// dropped the queue closes (after the receiver drains what is queued, it sees the end).
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// Queues `msg` without blocking.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Closed`] if the queue is closed, [`TrySendError::Full`] if the policy
    /// refused it. Either way the message is given back.
    pub fn try_send(&self, msg: SocketMessage) -> Result<(), TrySendError> {
        match self.shared.push(SharedMessage::new(msg)) {
            Ok(_) => Ok(()),
            Err(refused) => Err(refused.into()),
        }
    }

    /// Closes the queue: later pushes fail, the receiver drains what is queued and then ends.
    pub fn close(&self) {
        self.shared.close(CloseReason::Closed);
    }

    /// Whether the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Payload bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.bytes()
    }

    /// Messages dropped so far by the overflow policy.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped()
    }

    /// Whether both senders feed the same queue.
    pub fn same_channel(&self, other: &Sender) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Wakes the receiver's task (if it waits) without queueing anything: the server's
    /// heartbeat sweep uses it to make a connection look at the beat it advanced before.
    #[cfg(feature = "server")]
    pub(crate) fn wake_receiver(&self) {
        self.shared.waker.wake();
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        // ORDERING: like Arc's increment, a new handle is made from an existing one.
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // ORDERING: AcqRel: the last sender's close must follow every other sender's pushes.
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close(CloseReason::Closed);
        }
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("len", &self.shared.len())
            .field("bytes", &self.shared.bytes())
            .field("closed", &self.shared.is_closed())
            .finish()
    }
}

/// The consumer half of an outbound queue, drained by the transport.
///
/// # What a transport can rely on
///
/// - **Order**: messages come out in the order they were queued (per producer; pushes from
///   different threads are ordered by their reservation).
/// - **The end depends on why the queue closed** ([`close_reason`](Self::close_reason)):
///
///   | reason | what `recv` returns next |
///   | --- | --- |
///   | [`CloseReason::SlowConsumer`] (overflow under [`OverflowPolicy::Disconnect`]) | `None` at once: the backlog is what the client could not keep up with; it is discarded (and freed) instead of delivered. Send the client close 1008. |
///   | [`CloseReason::Unregistered`] (the app unregistered the socket), [`CloseReason::Closed`] (`close()`, or every sender dropped) | every message queued before the close, then `None`: the backlog drains. Close normally (1000) after it. |
///
///   So the obvious loop is right: `while let Some(m) = rx.recv().await { write(m) }`, then
///   look at `close_reason()` to pick the close code. [`try_recv`](Self::try_recv),
///   [`recv_many`](Self::recv_many) and [`try_recv_many`](Self::try_recv_many) follow the same
///   rule (`Err(Closed)` / `0`).
/// - **Cancel safety**: [`recv`](Self::recv) and [`recv_many`](Self::recv_many) are cancel
///   safe. A message is taken out of the queue only in the poll that returns it, so dropping
///   the future (the other branch of a `tokio::select!` won) loses nothing: the next call
///   gets the same message. `recv_many` moves messages into `buf` only in its final poll.
/// - **Wake-ups**: a pending `recv` is woken by the next push or by the close.
///
/// # Examples
///
/// A slow-consumer close ends the loop at once:
///
/// ```
/// use nucleus_stream::{channel, CloseReason, QueueConfig, SocketMessage};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (tx, mut rx) = channel(QueueConfig::default().max_messages(2));
/// tx.try_send(SocketMessage::text("1")).unwrap();
/// tx.try_send(SocketMessage::text("2")).unwrap();
/// assert!(tx.try_send(SocketMessage::text("3")).is_err()); // overflow: closed
/// let mut written = 0;
/// while let Some(_m) = rx.recv().await {
///     written += 1;
/// }
/// assert_eq!(written, 0, "a stale backlog is not delivered");
/// assert_eq!(rx.close_reason(), Some(CloseReason::SlowConsumer)); // → close 1008
/// # });
/// ```
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// Waits for the next message. Returns `None` once the queue is closed and drained, or
    /// at once after a slow-consumer close (see [what a transport can rely
    /// on](Self#what-a-transport-can-rely-on)). Cancel safe.
    pub async fn recv(&mut self) -> Option<SocketMessage> {
        poll_fn(|cx| self.shared.poll_recv(cx))
            .await
            .map(SharedMessage::into_message)
    }

    /// Polls for the next message; `Ready(None)` once the queue is closed and drained (at
    /// once after a slow-consumer close).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<SocketMessage>> {
        self.shared
            .poll_recv(cx)
            .map(|msg| msg.map(SharedMessage::into_message))
    }

    /// [`poll_recv`](Self::poll_recv), handing out the queued handle itself: a transport
    /// that only reads the message (the bundled server frames it) shares it with the other
    /// recipients of a broadcast instead of taking a copy of the message out.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn poll_recv_shared(&mut self, cx: &mut Context<'_>) -> Poll<Option<SharedMessage>> {
        self.shared.poll_recv(cx)
    }

    /// Takes the next message if one is queued.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if nothing is queued now, [`TryRecvError::Closed`] if the queue
    /// is closed and drained, or closed as a slow consumer.
    pub fn try_recv(&mut self) -> Result<SocketMessage, TryRecvError> {
        self.try_recv_shared().map(SharedMessage::into_message)
    }

    /// [`try_recv`](Self::try_recv), handing out the queued handle itself (see
    /// [`poll_recv_shared`](Self::poll_recv_shared)).
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    pub(crate) fn try_recv_shared(&mut self) -> Result<SharedMessage, TryRecvError> {
        if self.shared.discarding() {
            return Err(TryRecvError::Closed);
        }
        if let Some(msg) = self.shared.pop() {
            return Ok(msg);
        }
        // ORDERING: Acquire pairs with close() and reservations.
        let state = self.shared.state.load(Ordering::Acquire);
        if state & CLOSED != 0 && state & MESSAGES_MASK == 0 {
            Err(TryRecvError::Closed)
        } else {
            Err(TryRecvError::Empty)
        }
    }

    /// Takes queued messages while `f` asks for more: it gets each handle and returns whether
    /// to take another (a writer filling its batch). Returns how many were taken; `0` if none
    /// is queued now, or the queue was closed as a slow consumer (whose backlog is never
    /// handed out). The room of all of them is released with one read-modify-write instead of
    /// one per message.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn try_recv_shared_while(&mut self, f: impl FnMut(SharedMessage) -> bool) -> usize {
        if self.shared.discarding() {
            return 0;
        }
        self.shared.pop_while(f)
    }

    /// Waits until at least one message is queued, then moves up to `limit` queued messages
    /// into `buf` (a writer's batch: feed them all, flush once). Returns how many were moved;
    /// `0` means the queue is closed and drained, or closed as a slow consumer (or `limit` is
    /// 0). Cancel safe: nothing is moved into `buf` until the poll that returns.
    pub async fn recv_many(&mut self, buf: &mut Vec<SocketMessage>, limit: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        match self.recv().await {
            None => 0,
            Some(first) => {
                buf.push(first);
                1 + self.try_recv_many(buf, limit - 1)
            }
        }
    }

    /// Moves up to `limit` messages that are queued now into `buf`, without waiting.
    pub fn try_recv_many(&mut self, buf: &mut Vec<SocketMessage>, limit: usize) -> usize {
        if self.shared.discarding() {
            return 0;
        }
        if limit == 0 {
            return 0;
        }
        let mut n = 0;
        self.shared.pop_while(|msg| {
            buf.push(msg.into_message());
            n += 1;
            n < limit
        })
    }

    /// Closes the queue from the consumer side ([`CloseReason::Closed`]); queued messages can
    /// still be drained.
    pub fn close(&self) {
        self.shared.close(CloseReason::Closed);
    }

    /// Whether the queue is closed (messages may still be queued).
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Why the queue was closed, once it is.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.close_reason()
    }

    /// Polls for the queue's closing without taking any message: `Ready(reason)` once it is
    /// closed, otherwise `Pending` with the task registered to be woken by the next push or by
    /// the close. A transport whose write is stalled uses this to notice a slow-consumer close
    /// while it cannot take more messages. (Wake-ups from pushes are spurious for this purpose:
    /// poll again.)
    pub fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        if let Some(reason) = self.shared.close_reason() {
            return Poll::Ready(reason);
        }
        self.shared.waker.register(cx.waker());
        // Re-check after registering: a close that completed before the registration did not
        // see our waker.
        match self.shared.close_reason() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Payload bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.bytes()
    }

    /// Messages dropped so far by the overflow policy.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.close(CloseReason::ReceiverDropped);
        // Free queued payloads now rather than when the last sender goes.
        while self.shared.pop().is_some() {}
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("len", &self.shared.len())
            .field("bytes", &self.shared.bytes())
            .field("closed", &self.shared.is_closed())
            .finish()
    }
}

/// The item storage: [`segments::Segments`] normally; under loom a mutex-protected deque
/// stands in, so the protocol models of `loom_tests/queue.rs` stay small while the counting
/// and wake-up protocol around it stays ours (the storage has its own models,
/// `loom_tests/segments.rs`).
struct Items {
    #[cfg(not(nucleus_loom))]
    queue: segments::Segments<SharedMessage>,
    #[cfg(nucleus_loom)]
    queue: crate::sync::Mutex<std::collections::VecDeque<SharedMessage>>,
}

impl Items {
    fn new() -> Self {
        Self {
            #[cfg(not(nucleus_loom))]
            queue: segments::Segments::new(),
            #[cfg(nucleus_loom)]
            queue: crate::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    fn push(&self, msg: SharedMessage) {
        #[cfg(not(nucleus_loom))]
        self.queue.push(msg);
        #[cfg(nucleus_loom)]
        crate::sync::lock(&self.queue).push_back(msg);
    }

    /// Pops as the only popper.
    ///
    /// # Safety
    ///
    /// No other `pop` or `pop_shared` of this queue runs at the same time.
    unsafe fn pop(&self) -> Option<SharedMessage> {
        #[cfg(not(nucleus_loom))]
        {
            // SAFETY: forwarded from our caller.
            unsafe { self.queue.pop() }
        }
        #[cfg(nucleus_loom)]
        {
            crate::sync::lock(&self.queue).pop_front()
        }
    }

    /// Pops with other threads popping too; `None` also while another pop is in progress.
    fn pop_shared(&self) -> Option<SharedMessage> {
        #[cfg(not(nucleus_loom))]
        {
            self.queue.pop_shared()
        }
        #[cfg(nucleus_loom)]
        {
            crate::sync::lock(&self.queue).pop_front()
        }
    }
}
