//! [`SharedMessage`]: the one-pointer handle to a message that a broadcast shares between its
//! recipients' queues.
//!
//! A broadcast wraps its message once (one allocation per broadcast) and pushes a handle to
//! each recipient, so an outbound queue's slot holds one word instead of the 40-byte message
//! (`src/queue/mod.rs`, "Memory"). Until round 2 session 8 the handle was
//! `Arc<SocketMessage>`, and a broadcast to a room of `n` took its `n` references one
//! `lock inc` at a time: in `perf annotate` of one room of 1,000 (the chat example,
//! saturating) that one instruction was 74% of `Members::broadcast`'s own samples, 2.3% of
//! the server's. This handle is the same reference count without the weak count, plus
//! [`SharedMessage::shares`], which takes a whole room's references with one `fetch_add`
//! and gives back the ones a broadcast did not use with one `fetch_sub`.
//!
//! The writer drops each delivered handle with one decrement (a `lock decq`, 2.7% of the
//! server's samples in one room of 1,000 by round 2 session 9). Deferring those drops into a
//! per-thread table of 16 slots, one decrement per message and thread, was built and measured
//! in session 10: 0.99× in one room of 1,000, 1.04× in 200 rooms × 11 (8 interleaved pairs
//! each), and with 64 slots indexed by a per-thread sequence number (no collisions among the
//! messages in flight) 0.99× over 16 pairs: `perf` showed the decrement gone and the memory
//! traffic it had waited for showing up in the copies next to it. Not kept.
//!
//! Also measured in round 2 session 11 and not kept (one room of 1,000 / 200 rooms × 11,
//! 8 interleaved pairs each): the count and the message in one cache line (`repr(C,
//! align(64))`), 1.03× / 1.00×; and the writer prefetching the next queued handle's message
//! while it copies the current one (a peek at the queue's next slot), 0.99× / 0.99×. In
//! `perf annotate` the first load of each message's length and its `lock decq` are most of
//! the writer's pop loop: the kernel's send between one writer and the next evicts the
//! messages from L1, and hiding that miss moved the wait into the copy beside it.
//!
//! The counting follows `std::sync::Arc`: a new reference is a `Relaxed` increment (the
//! caller already holds one, so the message cannot go away meanwhile), a dropped one a
//! `Release` decrement, and the thread that drops the last one fences (`Acquire`) before it
//! frees the message, so every other holder's reads of it happen before the free.

use std::ops::Deref;
use std::ptr::NonNull;

use crate::message::SocketMessage;
use crate::sync::{AtomicUsize, Ordering, fence};

/// More references than this abort the process, as `Arc` does (a count that wrapped would
/// free a message still in use). No real broadcast comes near it.
const MAX_REFS: usize = isize::MAX as usize;

struct Inner {
    /// How many handles (and untaken [`Shares`]) refer to this message. Invariant: at least
    /// 1 while any handle exists; the handle whose decrement takes it from 1 to 0 frees the
    /// allocation, and nothing increments it from 0.
    refs: AtomicUsize,
    msg: SocketMessage,
}

/// A counted reference to a shared [`SocketMessage`] (see the module docs).
pub(crate) struct SharedMessage {
    inner: NonNull<Inner>,
}

// SAFETY: a handle gives out only `&SocketMessage` (which is `Sync`) and moves the message
// out only as its last owner (`into_message`), so handles may move and be shared between
// threads exactly when `SocketMessage: Send + Sync`, which it is (`Bytes` inside).
unsafe impl Send for SharedMessage {}
// SAFETY: as above.
unsafe impl Sync for SharedMessage {}

impl SharedMessage {
    /// Wraps `msg` in a new allocation with one reference.
    pub(crate) fn new(msg: SocketMessage) -> Self {
        let inner = Box::new(Inner {
            refs: AtomicUsize::new(1),
            msg,
        });
        Self {
            inner: NonNull::from(Box::leak(inner)),
        }
    }

    fn inner(&self) -> &Inner {
        // SAFETY: this handle holds a reference, so the allocation is live (module docs).
        unsafe { self.inner.as_ref() }
    }

    /// Takes `n` more references with one read-modify-write, for a broadcast to hand out one
    /// by one ([`Shares::take`]); the ones still untaken when the [`Shares`] drops are given
    /// back with one more.
    pub(crate) fn shares(&self, n: usize) -> Shares<'_> {
        if n > 0 {
            // ORDERING: as `Arc::clone`: we hold a reference, so the count cannot reach zero
            // meanwhile, and the new references publish nothing.
            let before = self.inner().refs.fetch_add(n, Ordering::Relaxed);
            if before > MAX_REFS - n.min(MAX_REFS) {
                std::process::abort();
            }
        }
        Shares { msg: self, left: n }
    }

    /// The message itself: moved out if this is the last handle, else cloned (a `Bytes`
    /// reference-count bump, never a payload copy).
    pub(crate) fn into_message(self) -> SocketMessage {
        // ORDERING: Acquire, as `Arc::try_unwrap`: the other holders' last reads (each ended
        // with a Release decrement) happen before we take the message out.
        if self
            .inner()
            .refs
            .compare_exchange(1, 0, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            let inner = self.inner;
            std::mem::forget(self);
            // SAFETY: the count went from 1 (ours) to 0, so no other handle exists and none
            // can be made; the allocation came from `Box::leak` in `new`.
            let inner = unsafe { Box::from_raw(inner.as_ptr()) };
            inner.msg
        } else {
            self.inner().msg.clone()
        }
    }
}

impl Clone for SharedMessage {
    fn clone(&self) -> Self {
        // ORDERING: as in `shares`.
        let before = self.inner().refs.fetch_add(1, Ordering::Relaxed);
        if before > MAX_REFS {
            std::process::abort();
        }
        Self { inner: self.inner }
    }
}

impl Deref for SharedMessage {
    type Target = SocketMessage;

    fn deref(&self) -> &SocketMessage {
        &self.inner().msg
    }
}

impl Drop for SharedMessage {
    fn drop(&mut self) {
        // ORDERING: Release, as `Arc`'s drop: our reads of the message happen before the
        // last holder's free (its Acquire fence below).
        if self.inner().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // ORDERING: Acquire pairs with every other holder's Release decrement.
        fence(Ordering::Acquire);
        // SAFETY: the count reached zero: no other handle exists, and the allocation came
        // from `Box::leak` in `new`.
        drop(unsafe { Box::from_raw(self.inner.as_ptr()) });
    }
}

impl std::fmt::Debug for SharedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner().msg.fmt(f)
    }
}

/// References taken in advance by [`SharedMessage::shares`]: each [`take`](Self::take)
/// hands one out as a handle without touching the count.
pub(crate) struct Shares<'a> {
    msg: &'a SharedMessage,
    /// References taken and not yet handed out. Invariant: counted in the message's `refs`.
    left: usize,
}

impl Shares<'_> {
    /// One of the references, as a handle; `None` once all were taken.
    pub(crate) fn take(&mut self) -> Option<SharedMessage> {
        self.left = self.left.checked_sub(1)?;
        Some(SharedMessage {
            inner: self.msg.inner,
        })
    }
}

impl Drop for Shares<'_> {
    fn drop(&mut self) {
        if self.left > 0 {
            // ORDERING: Release, as a handle's drop. It cannot reach zero: `self.msg` still
            // holds its own reference.
            self.msg
                .inner()
                .refs
                .fetch_sub(self.left, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(nucleus_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as Count;

    fn refs(m: &SharedMessage) -> usize {
        m.inner().refs.load(Ordering::Relaxed)
    }

    #[test]
    fn shares_count_once_and_give_back_the_unused() {
        let m = SharedMessage::new(SocketMessage::text("hi"));
        let mut taken = Vec::new();
        {
            let mut shares = m.shares(5);
            assert_eq!(refs(&m), 6);
            taken.push(shares.take().unwrap());
            taken.push(shares.take().unwrap());
        }
        // Three were not taken and came back; two handles and `m` are left.
        assert_eq!(refs(&m), 3);
        assert!(taken.iter().all(|t| t.as_text() == Some("hi")));
        drop(taken);
        assert_eq!(refs(&m), 1);
        let mut none = m.shares(0);
        assert!(none.take().is_none());
        drop(none);
        let mut one = m.shares(1);
        let a = one.take().unwrap();
        assert!(one.take().is_none(), "never more than were taken");
        drop(one);
        assert_eq!(refs(&m), 2);
        // Not the last handle: cloned out, the count drops by one.
        assert_eq!(a.into_message().as_text(), Some("hi"));
        assert_eq!(refs(&m), 1);
        // The last handle: moved out.
        assert_eq!(m.into_message().as_text(), Some("hi"));
    }

    /// Handles dropped on several threads at once free the message exactly once, after the
    /// last reader (a `Bytes` drop counter stands in for the free).
    #[test]
    fn the_last_of_many_threads_frees_the_message_once() {
        static FREED: Count = Count::new(0);
        struct Owner;
        impl AsRef<[u8]> for Owner {
            fn as_ref(&self) -> &[u8] {
                b"payload"
            }
        }
        impl Drop for Owner {
            fn drop(&mut self) {
                FREED.fetch_add(1, Ordering::Relaxed);
            }
        }
        for _ in 0..50 {
            FREED.store(0, Ordering::Relaxed);
            let payload = bytes::Bytes::from_owner(Owner);
            let m = SharedMessage::new(SocketMessage::Binary(payload));
            let mut shares = m.shares(8);
            let handles: Vec<_> = (0..8).map(|_| shares.take().unwrap()).collect();
            drop(shares);
            drop(m);
            let threads: Vec<_> = handles
                .into_iter()
                .map(|h| {
                    std::thread::spawn(move || {
                        assert!(matches!(&*h, SocketMessage::Binary(b) if b[..] == b"payload"[..]));
                        drop(h);
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(FREED.load(Ordering::Relaxed), 1);
        }
    }
}
