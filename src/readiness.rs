//! One file descriptor's readiness, as an edge-triggered event source reports it: the cell
//! the bundled server's reactor (`src/server/reactor.rs`) sets and a connection's task reads.
//!
//! The reactor sets bits when the kernel reports an edge and wakes the registered task; the
//! task tries its I/O while a bit is set and clears the bit only when the I/O would block,
//! and only if no edge arrived since it looked. Every edge bumps a tick kept beside the bits,
//! so the clear is a compare-and-swap against the value the task saw: an edge between the
//! look and the clear makes the clear fail, and the task tries again instead of waiting for
//! an edge that already happened. Why no edge is lost:
//!
//! - The reactor's set is a read-modify-write, then a wake. A task that finds its bit clear
//!   registers its waker, then loads the cell again: a set before that load is seen by it, a
//!   set after it is followed by a wake that the `AtomicWaker` protocol delivers.
//! - A clear succeeds only against the exact value the task saw before its I/O, so it can
//!   only remove readiness that the failed I/O itself disproved.
//!
//! The loom models in `loom_tests/readiness.rs` check both. The cell holds no file
//! descriptor and does no I/O: it is core code, and the models run it as it is.

use std::io;
use std::task::{Context, Poll, Waker, ready};

use crate::atomic_waker::AtomicWaker;
use crate::sync::{AtomicUsize, Ordering};

/// Readiness bits of a [`Readiness`] cell.
pub type Ready = usize;

/// The descriptor may be readable (or has hung up, or failed).
pub const READABLE: Ready = 0b01;
/// The descriptor may be writable (or has hung up, or failed).
pub const WRITABLE: Ready = 0b10;
/// Both directions.
pub const BOTH: Ready = READABLE | WRITABLE;
/// The tick's unit: the bits below it are readiness.
const TICK: usize = 0b100;

/// What the last edge left: readiness bits, and a tick of edges (see the module docs).
///
/// One task polls a cell (both directions from the same task: one waker slot serves them).
/// A cell is reused by the next descriptor once its owner is gone; an edge meant for the
/// old one then reaches the new one as a spurious readiness, which only costs an I/O that
/// would block.
pub struct Readiness {
    /// `tick * TICK | bits`. Invariant: every write is a read-modify-write; the tick grows by
    /// one on every [`set`](Self::set), so a value seen twice had no edge in between.
    state: AtomicUsize,
    /// The task waiting for an edge.
    waker: AtomicWaker,
}

impl Readiness {
    /// A cell with `bits` set (a new descriptor is optimistically ready: its first I/O tells).
    pub fn new(bits: Ready) -> Self {
        Self {
            state: AtomicUsize::new(bits & BOTH),
            waker: AtomicWaker::new(),
        }
    }

    /// An edge: sets `bits`, bumps the tick and wakes the waiting task (the reactor's side).
    pub fn set(&self, bits: Ready) {
        let mut seen = self.state.load(Ordering::Relaxed);
        loop {
            let next = seen.wrapping_add(TICK) | (bits & BOTH);
            // ORDERING: AcqRel: releases the edge to the task's Acquire load (the I/O it then
            // tries); the tick's exactness comes from the RMW order alone.
            match self
                .state
                .compare_exchange_weak(seen, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
        self.waker.wake();
    }

    /// `Ready(state)` if one of `bits` is set, with the state seen (for
    /// [`clear`](Self::clear)); else registers the task's waker and returns `Pending`.
    pub fn poll_ready(&self, cx: &mut Context<'_>, bits: Ready) -> Poll<usize> {
        // ORDERING: Acquire pairs with `set`'s release.
        let seen = self.state.load(Ordering::Acquire);
        if seen & bits != 0 {
            return Poll::Ready(seen);
        }
        self.waker.register(cx.waker());
        // ORDERING: as above; a set after this load is followed by a wake of the waker
        // registered above.
        let seen = self.state.load(Ordering::Acquire);
        if seen & bits != 0 {
            Poll::Ready(seen)
        } else {
            Poll::Pending
        }
    }

    /// The I/O tried after `poll_ready` returned `seen` would block: clears `bits`, unless an
    /// edge arrived since (then the caller tries its I/O again). Returns whether it cleared.
    pub fn clear(&self, seen: usize, bits: Ready) -> bool {
        // A bug planted for the loom models: clearing whatever arrived since the look.
        #[cfg(nucleus_loom_planted_readiness_bug)]
        {
            let _ = seen;
            // ORDERING: as below.
            self.state.fetch_and(!bits, Ordering::AcqRel);
            true
        }
        // ORDERING: Acquire on failure: the edge that changed the state is seen by the retry.
        #[cfg(not(nucleus_loom_planted_readiness_bug))]
        self.state
            .compare_exchange(seen, seen & !bits, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Runs `io` while one of `bits` is set, until it does not block: clears the bits when
    /// it would block (then waits for the next edge), and also after a result that `short`
    /// says left the kernel with nothing more (a short read or write: edge-triggered, the
    /// next edge comes when there is more), which saves the `EAGAIN` round trip.
    ///
    /// # Errors
    ///
    /// What `io` returns, other than `WouldBlock` and `Interrupted` (which are retried).
    pub fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        bits: Ready,
        mut io: impl FnMut() -> io::Result<R>,
        short: impl Fn(&R) -> bool,
    ) -> Poll<io::Result<R>> {
        loop {
            let seen = ready!(self.poll_ready(cx, bits));
            match io() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.clear(seen, bits);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(r) => {
                    if short(&r) {
                        self.clear(seen, bits);
                    }
                    return Poll::Ready(Ok(r));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// The owner is gone: drops its waker (a task's waker keeps the task's memory alive) and
    /// makes the cell ready for the next owner, with `bits` set.
    pub fn reset(&self, bits: Ready) {
        self.waker.register(Waker::noop());
        // ORDERING: Relaxed: the next owner takes the cell through the reactor's lock.
        self.state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((s.wrapping_add(TICK) & !BOTH) | (bits & BOTH))
            })
            .ok();
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // ORDERING: a snapshot for display.
        let state = self.state.load(Ordering::Relaxed);
        f.debug_struct("Readiness")
            .field("bits", &(state & BOTH))
            .field("tick", &(state / TICK))
            .finish()
    }
}

#[cfg(all(test, not(nucleus_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize as StdUsize;
    use std::task::Wake;

    struct Count(StdUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_clear_fails_after_an_edge_and_a_set_wakes_the_waiting_task() {
        let count = Arc::new(Count(StdUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let cell = Readiness::new(READABLE);
        let Poll::Ready(seen) = cell.poll_ready(&mut cx, READABLE) else {
            panic!("a new cell is ready");
        };
        cell.set(WRITABLE);
        assert!(
            !cell.clear(seen, READABLE),
            "an edge since the look keeps the bit"
        );
        let Poll::Ready(seen) = cell.poll_ready(&mut cx, READABLE) else {
            panic!("still readable");
        };
        assert!(cell.clear(seen, READABLE));
        assert!(cell.poll_ready(&mut cx, READABLE).is_pending());
        assert!(
            cell.poll_ready(&mut cx, WRITABLE).is_ready(),
            "the other bit stays"
        );
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        cell.set(READABLE);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(cell.poll_ready(&mut cx, READABLE).is_ready());
    }

    #[test]
    fn reset_drops_the_owners_waker() {
        let count = Arc::new(Count(StdUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let cell = Readiness::new(0);
        assert!(
            cell.poll_ready(&mut Context::from_waker(&waker), BOTH)
                .is_pending()
        );
        drop(waker);
        assert_eq!(Arc::strong_count(&count), 2, "the cell holds the waker");
        cell.reset(BOTH);
        assert_eq!(Arc::strong_count(&count), 1, "reset dropped it");
        cell.set(READABLE);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
