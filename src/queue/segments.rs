//! The outbound queue's item storage: a lock-free list of small segments, freed as the
//! consumer leaves them (a drained queue keeps at most one).
//!
//! # Why not `crossbeam_queue::SegQueue`
//!
//! An idle connection's queue is the thing this crate has most of. `SegQueue` pads its head
//! and tail to 128-byte cache lines each (256 B in every queue header) and keeps its last
//! block of 31 slots (504 B) once one message went through. With the server pinned to one
//! core the padding buys nothing measurable (this storage with `head` and `tail` each on its
//! own 128-byte line against without, chat example, 3 interleaved pairs: CPU per delivery
//! 726 vs 709 ns in one room of 1,000, 1,565 vs 1,531 ns in 200 rooms × 11), and 31 slots are
//! far more than a connection usually holds at once. This storage keeps two words in the
//! header (plus the pop flag) and segments of [`SLOTS`] slots (7: `next` + 7 handles + 7
//! one-byte ready flags = 72 B, one 80-byte malloc chunk); a drained queue holds at most one
//! segment, none if it drained at a segment's end.
//!
//! # The protocol
//!
//! `tail` is one tagged pointer: the last segment and, in its low bits, how many of its slots
//! are reserved. A producer reserves slot `k` with a compare-and-swap `(seg, k) → (seg, k+1)`;
//! it then owns that slot, writes the value and sets the slot's `ready` flag (a `Release`
//! store: each flag has one writer, so publishing costs a plain store, not a second
//! read-modify-write). A producer that finds the segment full (`k == SLOTS`) or no segment at all
//! (null) allocates one and installs it with a compare-and-swap to `(new, 1)` (it owns slot 0):
//! then it links it from the full segment's `next`, or, when there was none, stores it in
//! `head` for the consumer. Nothing but a successful compare-and-swap changes `tail`, and no
//! producer dereferences a segment before its compare-and-swap proved the segment live (its
//! slot unwritten, or its `next` unset, so the consumer cannot have freed it), so a stale or
//! recycled pointer (ABA) costs a failed compare-and-swap, never a use after free.
//!
//! `head` is the consumer's: the segment being read and its next slot. A pop reads the slot
//! whose `ready` flag is set, or finds none and the queue empty there. After a segment's
//! last slot it follows `next` and frees the segment it left: every producer that touched it
//! has set its bit or `next`, which the consumer observed (`Acquire`), so those were their last
//! accesses.
//!
//! **Retiring a spent segment.** When the consumer has read a segment's last slot and no
//! `next` is linked, it ends the segment: a compare-and-swap of `tail` from exactly
//! `(seg, SLOTS)` to null. It fails only if a producer is installing the successor (the next
//! pop follows `next`); once it succeeds no producer can touch `seg` (a stale `tail` fails its
//! compare-and-swap) and it is freed. The next producer finds a null tail and installs a fresh
//! segment into `head`. The consumer stores null into `head` *before* that compare-and-swap
//! (and restores it if the compare-and-swap fails): once `tail` is null a producer may store a
//! new segment into `head`, and a later store by the consumer would lose it.
//!
//! A partly used segment is not retired when the queue drains. That was built and measured
//! (the pop that emptied the queue retired any segment, so a drained queue held none): RSS per
//! idle joined connection of the chat example was 2,401–2,402 B with it against 2,336–2,346 B
//! without (`loadgen --idle --subscribers 10000 --rooms 100`, 2 interleaved pairs):
//! freed segments stay in glibc's heap, and a segment allocated and freed per message drained
//! scatters them. It would also add an allocation per message to a queue that drains after
//! each one (the saturating benchmarks), where now a segment is allocated per 7.
//!
//! **No cache of spent segments.** A per-thread cache of freed segments' memory (up to 256
//! blocks, taken by the next segment allocated on the thread) was built to keep the ~143
//! segments a broadcast to 1,000 members allocates out of glibc's fast bins
//! (`malloc_consolidate` was 2.2% of that benchmark's samples), and measured slower: CPU per
//! delivery in one room of 1,000 670 vs 628 ns and 675 vs 644 ns (medians of 3 interleaved
//! pairs each, either order; chat example, `loadgen --subscribers 1000 --duration 5`).
//! glibc's own per-thread cache and fast bins are already the short path. Built again in round
//! 2 session 10 on a much faster wire path (one room of 1,000 at ~300 ns per delivery, where
//! glibc's allocator was 6.5% of the samples): 1.05× in one room of 1,000 and 0.95× in 200
//! rooms × 11 (8 interleaved pairs each, `AGAINST=<the build before> benches/compare_uws.sh`):
//! noise, not kept. With room for a whole burst (4,096 blocks, 288 KiB per thread) glibc's
//! share of the samples halved (about 11% → 5.4%), and push and pop grew by as much (the
//! cached blocks are cold): 1.00× and 1.02× (10 pairs each).
//!
//! # Measured
//!
//! Against the same code with `SegQueue` (the chat example and `loadgen`, each pinned to its
//! own core, 3 interleaved pairs, medians): RSS per idle joined connection (`--idle
//! --subscribers 10000 --rooms 100`) 3,505 → 2,353 B; CPU per delivery in one room of 1,000
//! (`--subscribers 1000 --duration 5`) 704 → 669 ns, in 200 rooms × 11 (`--subscribers 2000
//! --publishers 200 --rooms 200 --duration 5`) 1,492 → 1,429 ns. `perf record` of the
//! 200-room case: the storage's push and pop 1.2% + 1.6% of the server's samples against
//! `SegQueue`'s 2.6% + 2.2%, glibc's allocator 8.6% against 10.4%.
//!
//! One-writer ready flags instead of a shared `written` bit mask (a push's third
//! read-modify-write becomes a store), together with the writer's batches giving their room
//! back with one read-modify-write (`Receiver::try_recv_shared_while`): CPU per delivery in
//! one room of 1,000 0.92× of the code before (median of 8 interleaved pairs, 0.90–1.09;
//! the push path was 9.2% of that benchmark's samples), in 200 rooms × 11 1.00× (6 pairs,
//! 0.92–1.08: noise, 11 pushes per message there against 1,000).
//!
//! # Poppers
//!
//! [`Segments::pop`] is for a single popper (the `Receiver`, when producers never pop);
//! [`Segments::pop_shared`] may be called from several threads at once (the consumer and
//! `OverflowPolicy::DropOldest` producers): it takes a one-byte flag around the same pop and
//! returns `None` if another pop holds it, a bounded wait the callers already handle as "a
//! push is in flight".
//!
//! The loom models of this storage are in `loom_tests/segments.rs` (with 2 slots per segment
//! under loom, so every model crosses segment boundaries and retires segments).

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr;

use crate::sync::{AtomicBool, AtomicPtr, Ordering, UnsafeCell};

/// Slots per segment: 7 × 8-byte handles + `next` + 7 ready flags = 72 B, an 80-byte malloc chunk,
/// and 7 is what the 3 low bits of an 8-aligned pointer can count to (`tail`'s tag). Other
/// sizes were not measured; 31 (`SegQueue`'s block) cost 504 B per connection that kept one.
#[cfg(not(nucleus_loom))]
pub const SLOTS: usize = 7;
/// Slots per segment (loom build: 2, so the models cross segment boundaries).
#[cfg(nucleus_loom)]
pub const SLOTS: usize = 2;

/// The low bits of a tagged segment pointer: a slot offset in `0..=SLOTS`. Segments are
/// aligned to 8, so these bits of their address are zero.
const OFFSET_MASK: usize = 0b111;
const _: () = assert!(SLOTS <= OFFSET_MASK && SLOTS > 0);
const _: () = assert!(std::mem::align_of::<Segment<u8>>() > OFFSET_MASK);
// One 80-byte malloc chunk per segment of pointer-sized handles (the figure the module docs
// and `tests/queue_memory.rs` use).
#[cfg(not(nucleus_loom))]
const _: () = assert!(std::mem::size_of::<Segment<usize>>() == 72);

#[repr(C, align(8))]
struct Segment<T> {
    /// The segment after this one. Invariant: null until the producer that installed the next
    /// segment (after this one filled) stores it, once; never changed after.
    next: AtomicPtr<Segment<T>>,
    slots: [UnsafeCell<MaybeUninit<T>>; SLOTS],
    /// `ready[i]` is set (`Release` store) by the producer that reserved slot `i`, after it
    /// wrote the value. Invariant: set at most once, by that producer only, never cleared; a
    /// set flag at or after the consumer's offset means the slot holds a value not yet taken.
    /// (Until 2026-12 one `written` bit mask, set with `fetch_or`: a read-modify-write per
    /// push that these one-writer flags replace with a store.)
    ready: [AtomicBool; SLOTS],
}

impl<T> Segment<T> {
    fn alloc() -> *mut Self {
        Box::into_raw(Box::new(Self {
            next: AtomicPtr::new(ptr::null_mut()),
            slots: std::array::from_fn(|_| UnsafeCell::new(MaybeUninit::uninit())),
            ready: std::array::from_fn(|_| AtomicBool::new(false)),
        }))
    }

    /// Writes `value` into slot `offset` and publishes it.
    ///
    /// # Safety
    ///
    /// The caller reserved slot `offset` of the live segment `seg` (its compare-and-swap on
    /// `tail` moved past it), and has not written it yet.
    unsafe fn write(seg: *mut Self, offset: usize, value: T) {
        // SAFETY: the slot is ours alone (reserved, not yet published); `seg` is live until
        // the consumer reads this slot, which it does only after the flag below is set.
        unsafe {
            (*seg).slots[offset].with_mut(|slot| (*slot).write(value));
            // ORDERING: Release publishes the value to the consumer's Acquire load of the
            // flag; this is our last access to the segment.
            (*seg).ready[offset].store(true, Ordering::Release);
        }
    }
}

fn pack<T>(seg: *mut Segment<T>, offset: usize) -> *mut Segment<T> {
    seg.map_addr(|addr| addr | offset)
}

fn unpack<T>(tagged: *mut Segment<T>) -> (*mut Segment<T>, usize) {
    (
        tagged.map_addr(|addr| addr & !OFFSET_MASK),
        tagged.addr() & OFFSET_MASK,
    )
}

/// A lock-free multi-producer queue of small segments (see the module docs).
///
/// Public only for the loom models (`--cfg nucleus_loom`); the crate uses it as the outbound
/// queue's storage.
pub struct Segments<T> {
    /// The producers' end: the last segment, tagged with how many of its slots are reserved,
    /// or null while no segment is live. Invariant: only compare-and-swaps change it; a
    /// producer whose compare-and-swap moved the offset from `k` owns slot `k`; it becomes null
    /// only by the consumer's retirement of the segment it named.
    tail: AtomicPtr<Segment<T>>,
    /// The consumer's end: the segment being read, tagged with the next slot to read, or null
    /// while no segment is live. Invariant: written by the popper only, except that the
    /// producer whose compare-and-swap installed a segment into a null `tail` stores
    /// `(segment, 0)` here; the popper stores null before it nulls `tail`, so it never
    /// overwrites that store.
    head: AtomicPtr<Segment<T>>,
    /// Held by the thread inside [`pop_shared`](Self::pop_shared). Invariant: at most one
    /// thread pops at a time while it is used (`pop`'s callers promise the same by contract).
    popping: AtomicBool,
    _owns: PhantomData<T>,
}

// SAFETY: the queue moves `T`s between threads (pushed on one, popped on another) and hands
// out no shared references to them, so `T: Send` suffices for both.
unsafe impl<T: Send> Send for Segments<T> {}
// SAFETY: as above; every shared access goes through the atomic protocol of the module docs.
unsafe impl<T: Send> Sync for Segments<T> {}

impl<T> Default for Segments<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Segments<T> {
    /// Byte offset of `tail`, the word every push writes (for prefetching).
    #[cfg(not(nucleus_loom))]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) const TAIL_OFFSET: usize = std::mem::offset_of!(Self, tail);

    /// An empty queue; allocates nothing.
    pub fn new() -> Self {
        Self {
            tail: AtomicPtr::new(ptr::null_mut()),
            head: AtomicPtr::new(ptr::null_mut()),
            popping: AtomicBool::new(false),
            _owns: PhantomData,
        }
    }

    /// Appends `value`. Lock-free; may be called from any number of threads at once.
    pub fn push(&self, value: T) {
        // A segment allocated for an install that lost its race, kept for the next attempt.
        let mut spare: *mut Segment<T> = ptr::null_mut();
        // ORDERING: Acquire: a segment named by `tail` was initialized before the Release
        // compare-and-swap that installed it; a null `tail` carries the consumer's null store
        // to `head` (its retirement is a Release compare-and-swap).
        let mut current = self.tail.load(Ordering::Acquire);
        loop {
            let (seg, offset) = unpack(current);
            if seg.is_null() || offset == SLOTS {
                if spare.is_null() {
                    spare = Segment::alloc();
                }
                // ORDERING: AcqRel: Release publishes the new segment's initialization to the
                // producers that reserve in it; Acquire as the load above.
                match self.tail.compare_exchange_weak(
                    current,
                    pack(spare, 1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        if seg.is_null() {
                            // ORDERING: Release publishes the segment's initialization to the
                            // consumer's Acquire load of `head`.
                            self.head.store(spare, Ordering::Release);
                        } else {
                            // SAFETY: `seg` is live: all its slots are reserved and the
                            // consumer frees it only after it sees this `next`, or by retiring
                            // it, which needs `tail` to still name it (we just replaced it).
                            // ORDERING: Release publishes the new segment to the consumer's
                            // Acquire load of `next`; our last access to `seg`.
                            unsafe { (*seg).next.store(spare, Ordering::Release) };
                        }
                        // SAFETY: our compare-and-swap reserved slot 0 of the new segment.
                        unsafe { Segment::write(spare, 0, value) };
                        return;
                    }
                    Err(actual) => {
                        current = actual;
                        continue;
                    }
                }
            }
            // ORDERING: AcqRel: Acquire makes the segment's initialization visible before we
            // write into it (also after an ABA on a recycled address: the value we replace was
            // written in the release sequence of the segment's installer); Release keeps the
            // release sequence plain.
            match self.tail.compare_exchange_weak(
                current,
                pack(seg, offset + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if !spare.is_null() {
                        // SAFETY: never published: our install attempt lost.
                        drop(unsafe { Box::from_raw(spare) });
                    }
                    // SAFETY: our compare-and-swap reserved slot `offset` of `seg`.
                    unsafe { Segment::write(seg, offset, value) };
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Takes the oldest value, or `None` if nothing is published yet (a push whose slot is
    /// reserved but not yet written is not visible). Frees each segment once its last slot is
    /// read (the last one too, if nothing follows it).
    ///
    /// # Safety
    ///
    /// No other `pop` or [`pop_shared`](Self::pop_shared) runs at the same time (calls from
    /// one thread, or ordered by a lock, are fine).
    pub unsafe fn pop(&self) -> Option<T> {
        // ORDERING: Acquire pairs with the Release store of a producer that installed the
        // first segment: its initialization.
        let (mut seg, mut offset) = unpack(self.head.load(Ordering::Acquire));
        if seg.is_null() {
            return None;
        }
        if offset == SLOTS {
            // The last pop read a segment's last slot before its successor was linked.
            // SAFETY: only the popper frees segments, and we are the only popper.
            match unsafe { self.advance(seg) } {
                Some(next) => (seg, offset) = (next, 0),
                None => {
                    self.retire(seg);
                    return None;
                }
            }
        }
        // SAFETY: `seg` is live (only the popper frees segments).
        // ORDERING: Acquire pairs with the producer's Release store of the flag: the value.
        if !unsafe { (*seg).ready[offset].load(Ordering::Acquire) } {
            return None;
        }
        // SAFETY: the slot was written (flag set, value published to us) and is read once:
        // `head` moves past it below, and only the popper reads slots.
        let value = unsafe { (*seg).slots[offset].with_mut(|slot| (*slot).assume_init_read()) };
        if offset == 0 {
            // SAFETY: as above, `seg` is live.
            unsafe { Self::prefetch_next(seg) };
        }
        let after = offset + 1;
        if after < SLOTS {
            // ORDERING: `head` is the popper's own; a later popper is ordered after us by the
            // caller's contract.
            self.head.store(pack(seg, after), Ordering::Relaxed);
        } else {
            // The segment's last slot: move on now, or end the segment if nothing follows,
            // so a queue drained at a segment's end keeps none.
            // SAFETY: as above; we just read the segment's last slot.
            if unsafe { self.advance(seg) }.is_none() {
                self.retire(seg);
            }
        }
        Some(value)
    }

    /// On a segment's first pop: asks the CPU for the next segment's two cache lines, so that
    /// a writer taking a burst finds each segment after the first already in cache instead
    /// of missing on each in turn. `next` is in the line the first slot's read just brought
    /// in. Measured (round 2 session 11, chat example, one room of 1,000 saturating): the
    /// load of the `ready` flag was 82% of `pop`'s own samples and `pop` 3.2% of the
    /// server's, 1.0% with the hint; CPU per delivery 0.96× in one room of 1,000 and 0.98×
    /// in 200 rooms × 11 (16 interleaved pairs each, `AGAINST=<the build before>
    /// benches/compare_uws.sh`; part of the wait moves to the writer's staging copy).
    ///
    /// # Safety
    ///
    /// Popper only; `seg` is live.
    #[inline(always)]
    unsafe fn prefetch_next(seg: *mut Segment<T>) {
        #[cfg(not(nucleus_loom))]
        {
            // SAFETY: forwarded from our caller.
            // ORDERING: a hint: a null or not-yet-linked `next` only skips it.
            let next = unsafe { (*seg).next.load(Ordering::Relaxed) };
            if !next.is_null() {
                // Its first and its last byte: the lines a segment spans (72 bytes for the
                // queue's handles, so two).
                crate::sync::prefetch(next, 0);
                crate::sync::prefetch(next, std::mem::size_of::<Segment<T>>() - 1);
            }
        }
        #[cfg(nucleus_loom)]
        let _ = seg;
    }

    /// Moves `head` from the fully read segment `seg` to its successor and frees `seg`;
    /// `None` (and nothing changed) if no successor is linked yet.
    ///
    /// # Safety
    ///
    /// Popper only; every slot of `seg` has been read.
    unsafe fn advance(&self, seg: *mut Segment<T>) -> Option<*mut Segment<T>> {
        // SAFETY: `seg` is live: only the popper frees segments.
        // ORDERING: Acquire pairs with the installer's Release store of `next`: the new
        // segment's initialization, and the end of the installer's accesses to `seg`.
        let next = unsafe { (*seg).next.load(Ordering::Acquire) };
        if next.is_null() {
            return None;
        }
        // ORDERING: `head` is the popper's own (see `pop`).
        self.head.store(next, Ordering::Relaxed);
        // SAFETY: every slot was read (each producer's last access, its `ready` flag, was
        // observed with Acquire) and the installer's last access was `next`, just observed:
        // no thread touches `seg` any more.
        drop(unsafe { Box::from_raw(seg) });
        Some(next)
    }

    /// [`pop`](Self::pop) from any thread, with other threads popping at the same time.
    /// Returns `None` if the queue is empty, or if another thread is popping right now (a
    /// bounded wait: a pop holds the flag for one slot).
    pub fn pop_shared(&self) -> Option<T> {
        // ORDERING: Acquire: the previous popper's accesses to `head` and the slots happen
        // before ours. Failure Relaxed: we touch nothing.
        if self
            .popping
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: we hold `popping`, and every popper of this queue takes it.
        let value = unsafe { self.pop() };
        // ORDERING: Release: hands our accesses to the next popper (its Acquire above).
        self.popping.store(false, Ordering::Release);
        value
    }

    /// Every slot of `seg` was read and no successor is linked: end `seg` unless a producer
    /// is installing one right now. Popper only.
    fn retire(&self, seg: *mut Segment<T>) {
        // Before nulling `tail`: afterwards a producer may install a segment into `head`.
        // ORDERING: `head` is the popper's own until `tail` is null; the Release
        // compare-and-swap below orders this store before any installer's store.
        self.head.store(ptr::null_mut(), Ordering::Relaxed);
        // ORDERING: Release, see above. Failure Relaxed: we only restore our own `head`.
        match self.tail.compare_exchange(
            pack(seg, SLOTS),
            ptr::null_mut(),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            // SAFETY: every slot was read (their producers' last accesses observed) and no
            // producer installed a successor, and none can now: a producer dereferences a
            // segment only after its compare-and-swap on `tail` named it, which now fails.
            Ok(_) => drop(unsafe { Box::from_raw(seg) }),
            // A producer is installing the successor: the next pop follows `next`.
            // ORDERING: as above; `tail` is not null, so no producer writes `head`.
            Err(_) => self.head.store(pack(seg, SLOTS), Ordering::Relaxed),
        }
    }
}

impl<T> Drop for Segments<T> {
    fn drop(&mut self) {
        // ORDERING: `&mut self`: every other access happened before (whoever shared the queue
        // handed it over, e.g. through `Arc`'s drop).
        let (mut seg, mut offset) = unpack(self.head.load(Ordering::Relaxed));
        while !seg.is_null() {
            // SAFETY: `seg` is live (reachable from `head`) and no other thread uses the queue.
            let segment = unsafe { Box::from_raw(seg) };
            for i in offset..SLOTS {
                // ORDERING: as above.
                if segment.ready[i].load(Ordering::Relaxed) {
                    // SAFETY: written and not yet taken (at or after the consumer's offset).
                    segment.slots[i].with_mut(|slot| unsafe { (*slot).assume_init_drop() });
                }
            }
            // ORDERING: as above.
            seg = segment.next.load(Ordering::Relaxed);
            offset = 0;
        }
    }
}

#[cfg(all(test, not(nucleus_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_across_segments_and_retirement() {
        let q = Segments::new();
        for round in 0..3 {
            for i in 0..(SLOTS * 3) {
                q.push((round, i));
            }
            for i in 0..(SLOTS * 3) {
                // SAFETY: one thread.
                assert_eq!(unsafe { q.pop() }, Some((round, i)));
            }
            // SAFETY: one thread.
            assert_eq!(unsafe { q.pop() }, None);
            // Drained at a segment's end: the last segment was retired.
            assert!(q.head.load(Ordering::Relaxed).is_null());
            assert!(q.tail.load(Ordering::Relaxed).is_null());
        }
        // Drained inside a segment: that one segment stays, and is used on.
        for i in 0..(SLOTS + 2) {
            q.push((9, i));
        }
        for i in 0..(SLOTS + 2) {
            // SAFETY: one thread.
            assert_eq!(unsafe { q.pop() }, Some((9, i)));
        }
        // SAFETY: one thread.
        assert_eq!(unsafe { q.pop() }, None);
        let kept = unpack(q.head.load(Ordering::Relaxed));
        assert!(!kept.0.is_null());
        assert_eq!(kept, unpack(q.tail.load(Ordering::Relaxed)));
        for i in 0..SLOTS {
            q.push((10, i));
        }
        for i in 0..SLOTS {
            // SAFETY: one thread.
            assert_eq!(unsafe { q.pop() }, Some((10, i)));
        }
    }

    #[test]
    fn drop_frees_values_left_queued() {
        let value = Arc::new(());
        {
            let q = Segments::new();
            for _ in 0..(SLOTS * 2 + 3) {
                q.push(Arc::clone(&value));
            }
            for _ in 0..(SLOTS + 1) {
                // SAFETY: one thread.
                drop(unsafe { q.pop() });
            }
            assert_eq!(Arc::strong_count(&value), SLOTS + 3);
        }
        assert_eq!(Arc::strong_count(&value), 1);
    }

    /// Real threads: producers push numbered items; the consumer and some of the producers
    /// pop through `pop_shared` (as `OverflowPolicy::DropOldest` producers do). Every item is
    /// taken exactly once, and each popper sees each producer's items in push order.
    #[test]
    fn stress_producers_and_shared_poppers() {
        const PRODUCERS: usize = 4;
        const PER_PRODUCER: usize = 50_000;
        let q = Arc::new(Segments::<(usize, usize)>::new());
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let check = |taken: &[(usize, usize)]| {
            let mut last = [None::<usize>; PRODUCERS];
            for &(p, i) in taken {
                assert!(
                    last[p].is_none_or(|l| l < i),
                    "producer {p}: {i} after {last:?}"
                );
                last[p] = Some(i);
            }
        };
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let q = Arc::clone(&q);
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let mut popped = Vec::new();
                    for i in 0..PER_PRODUCER {
                        q.push((p, i));
                        // Half the producers also pop now and then, as DropOldest does.
                        if p % 2 == 1 && i % 3 == 0 {
                            popped.extend(q.pop_shared());
                        }
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::Release);
                    popped
                })
            })
            .collect();
        let mut consumed = Vec::new();
        loop {
            let finished = done.load(std::sync::atomic::Ordering::Acquire) == PRODUCERS;
            match q.pop_shared() {
                Some(item) => consumed.push(item),
                None if finished => {
                    // The flag may have been busy; pop until truly empty.
                    match q.pop_shared() {
                        Some(item) => consumed.push(item),
                        None => break,
                    }
                }
                None => std::hint::spin_loop(),
            }
        }
        check(&consumed);
        let mut seen = vec![vec![0u8; PER_PRODUCER]; PRODUCERS];
        for &(p, i) in &consumed {
            seen[p][i] += 1;
        }
        for handle in producers {
            let popped = handle.join().unwrap();
            check(&popped);
            for (p, i) in popped {
                seen[p][i] += 1;
            }
        }
        // Producers have all joined: whatever is left is visible now.
        // SAFETY: no other thread uses the queue any more.
        while let Some((p, i)) = unsafe { q.pop() } {
            seen[p][i] += 1;
        }
        for (p, counts) in seen.iter().enumerate() {
            for (i, &n) in counts.iter().enumerate() {
                assert_eq!(n, 1, "producer {p} item {i} taken {n} times");
            }
        }
        let (seg, _) = unpack(q.head.load(Ordering::Relaxed));
        assert_eq!(
            seg,
            unpack(q.tail.load(Ordering::Relaxed)).0,
            "drained: at most one segment kept"
        );
    }
}
