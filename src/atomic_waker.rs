//! A waker slot shared by wakers on any thread and one registering side: the `AtomicWaker`
//! protocol of futures-rs, written against the sync facade so that loom checks it. The
//! outbound queue (`src/queue/`) and the bundled server's readiness cells
//! (`src/readiness.rs`) use it.

use std::task::Waker;

use crate::sync::{AtomicUsize, Ordering, UnsafeCell};

/// A waker slot shared by producers (who wake) and one consumer (who registers): the
/// `AtomicWaker` protocol of futures-rs, written against the sync facade so loom checks it.
pub(crate) struct AtomicWaker {
    /// WAITING (0), or REGISTERING and/or WAKING bits held by whoever is touching `waker`.
    /// Invariant: `waker` is accessed only by the thread that moved the state out of WAITING.
    state: AtomicUsize,
    waker: UnsafeCell<Option<Waker>>,
}

const WAITING: usize = 0;
const REGISTERING: usize = 0b01;
const WAKING: usize = 0b10;

// SAFETY: access to `waker` is serialized by the `state` protocol.
unsafe impl Send for AtomicWaker {}
// SAFETY: as above.
unsafe impl Sync for AtomicWaker {}

impl AtomicWaker {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicUsize::new(WAITING),
            waker: UnsafeCell::new(None),
        }
    }

    /// Stores `waker` to be woken by the next [`wake`](Self::wake). One thread registers at a
    /// time (the consumer).
    pub(crate) fn register(&self, waker: &Waker) {
        // ORDERING: Acquire takes the slot and sees the last waker stored in it.
        match self
            .state
            .compare_exchange(WAITING, REGISTERING, Ordering::Acquire, Ordering::Acquire)
            .unwrap_or_else(|x| x)
        {
            WAITING => {
                // The only user code run while we hold REGISTERING is `Waker::clone`; a
                // superseded waker is handed out of the slot and dropped after we release it.
                // If the clone panics, the slot must not stay REGISTERING (no wake could ever
                // take it again): release it, then let the panic continue.
                let clone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.waker.with_mut(|slot| {
                        // SAFETY: we hold REGISTERING; no one else touches the slot.
                        let slot = unsafe { &mut *slot };
                        match slot {
                            Some(old) if old.will_wake(waker) => None,
                            _ => slot.replace(waker.clone()),
                        }
                    })
                }));
                let superseded = match clone {
                    Ok(superseded) => superseded,
                    Err(panic) => {
                        // The slot still holds the previous waker (the clone never reached
                        // it). Empty it, so no wake uses a stale waker, and release the slot
                        // whatever a concurrent wake set meanwhile: the consumer re-checks
                        // the queue when it is polled again, so no push is lost.
                        // SAFETY: still REGISTERING (maybe | WAKING): the slot is ours.
                        let stale = self.waker.with_mut(|slot| unsafe { (*slot).take() });
                        // ORDERING: AcqRel: release the slot, acquire a concurrent wake's push.
                        self.state.swap(WAITING, Ordering::AcqRel);
                        drop(stale);
                        std::panic::resume_unwind(panic);
                    }
                };
                // ORDERING: AcqRel releases the stored waker to the next taker and acquires a
                // concurrent waker's pushes if it set WAKING meanwhile.
                if self
                    .state
                    .compare_exchange(REGISTERING, WAITING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // A wake arrived while we registered: it could not take the waker, so we
                    // wake on its behalf.
                    // SAFETY: still REGISTERING | WAKING: the slot is ours.
                    let taken = self.waker.with_mut(|slot| unsafe { (*slot).take() });
                    // ORDERING: AcqRel: release the slot.
                    self.state.swap(WAITING, Ordering::AcqRel);
                    drop(superseded);
                    if let Some(w) = taken {
                        w.wake();
                    }
                } else {
                    drop(superseded);
                }
            }
            WAKING => {
                // A wake is in progress and may have missed the new waker: wake it ourselves.
                waker.wake_by_ref();
                // The consumer is polled again at once and may find the wake still in
                // progress: this is a spin, so let the waking thread run (under loom a
                // spin that never yields is an endless execution).
                crate::sync::spin_hint();
            }
            _ => {
                // Concurrent register calls are impossible (one Receiver, `&mut self`).
            }
        }
    }

    /// Wakes (and takes) the registered waker, if any.
    pub(crate) fn wake(&self) {
        // ORDERING: AcqRel: acquire the registered waker; release our push to the consumer.
        if self.state.fetch_or(WAKING, Ordering::AcqRel) == WAITING {
            // SAFETY: we moved the state out of WAITING: the slot is ours.
            let taken = self.waker.with_mut(|slot| unsafe { (*slot).take() });
            // ORDERING: Release: the slot is free again.
            self.state.fetch_and(!WAKING, Ordering::Release);
            if let Some(w) = taken {
                w.wake();
            }
        }
    }
}
