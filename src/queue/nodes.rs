//! The queue's item storage: a singly linked list of one-message nodes, appended by any
//! number of producers with one atomic swap and taken by one popper at a time (Dmitry
//! Vyukov's multi-producer single-consumer node queue).
//!
//! Why not a segment queue (crossbeam's `SegQueue`, which this replaced): a segment queue
//! keeps its last segment (31 slots) allocated while idle and cache-pads its two ends, so an
//! idle socket's queue cost 512 + 504 bytes; here it costs the two pointers below and one
//! 16-byte node (the one the popper stands on). The price is one allocation per queued
//! message, freed when it is taken (`BENCHMARKS.md` has the A/B).
//!
//! # How it works
//!
//! The list always holds at least one node, the *stub*: the node the popper stands on, whose
//! message was already taken (at first, an empty one). A push allocates a node, swaps it into
//! `tail`, and then links it from the node it swapped out. A pop looks at the stub's `next`:
//! if it is linked, that node becomes the new stub, its message is taken, and the old stub is
//! freed. Between a producer's swap and its link, the nodes after the swapped-out one are not
//! reachable yet: a pop then finds nothing although a message is counted. The queue's protocol
//! already handles that case (a reservation whose push is in flight, `mod.rs`); a segment
//! queue has the same window (a slot reserved and not yet written).
//!
//! Nodes are freed only by the popper, and only once their `next` is linked: the producer that
//! links it has finished with it, and no other producer can reach it (each node is swapped
//! out of `tail` exactly once).

use std::ptr;

use crate::message::SharedMessage;
use crate::sync::{AtomicPtr, Ordering, UnsafeCell};

struct Node {
    /// The node after this one. Null until that node's producer links it; written once.
    next: AtomicPtr<Node>,
    /// The message; `None` in the stub. Written at allocation, taken once by the popper.
    msg: UnsafeCell<Option<SharedMessage>>,
}

impl Node {
    fn alloc(msg: Option<SharedMessage>) -> *mut Node {
        Box::into_raw(Box::new(Node {
            next: AtomicPtr::new(ptr::null_mut()),
            msg: UnsafeCell::new(msg),
        }))
    }
}

/// Messages in order, appended lock-free by any thread, taken by one popper at a time.
///
/// Crate-internal; public (hidden) only in loom builds, for its models.
pub struct Nodes {
    /// The last node appended. Invariant: never null; it is the stub or a node reachable from
    /// it once every in-flight push has linked its node.
    tail: AtomicPtr<Node>,
    /// The stub: the node the popper stands on. Touched only by the popper (see
    /// [`pop`](Self::pop)'s contract) and by `drop`.
    head: UnsafeCell<*mut Node>,
}

// SAFETY: the nodes and the messages in them are owned by the list; producers only write a
// node they allocated and the `next` of the node they swapped out of `tail` (an atomic), and
// messages (`Send + Sync`: `Arc<SocketMessage>`) move from a producer to the popper.
unsafe impl Send for Nodes {}
// SAFETY: as above; `head` is only touched under `pop`'s one-popper contract.
unsafe impl Sync for Nodes {}

impl Nodes {
    /// An empty list (one stub node).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let stub = Node::alloc(None);
        Self {
            tail: AtomicPtr::new(stub),
            head: UnsafeCell::new(stub),
        }
    }

    /// Appends `msg`. Any thread, any time.
    pub fn push(&self, msg: SharedMessage) {
        let node = Node::alloc(Some(msg));
        // ORDERING: AcqRel: Release hands our node's initialisation to the next producer (it
        // writes our node's `next`); Acquire takes the previous producer's node likewise.
        let prev = self.tail.swap(node, Ordering::AcqRel);
        // SAFETY: `prev` is alive: the popper frees a node only after its `next` is linked,
        // and linking `prev` is what we are about to do (no one else swapped `prev` out).
        // ORDERING: Release publishes the node and its message to the popper's Acquire load.
        unsafe { (*prev).next.store(node, Ordering::Release) };
    }

    /// Takes the oldest message, if one is linked.
    ///
    /// # Safety
    ///
    /// No other `pop` may run at the same time (one popper at a time: the queue's single
    /// receiver, or whoever holds the queue's pop lock).
    pub unsafe fn pop(&self) -> Option<SharedMessage> {
        self.head.with_mut(|head| {
            // SAFETY: one popper (the contract): `head` is ours, and the stub it points to is
            // alive (only the popper frees nodes).
            let stub = unsafe { *head };
            // ORDERING: Acquire pairs with the producer's Release link: seeing the node means
            // seeing its message.
            let next = unsafe { (*stub).next.load(Ordering::Acquire) };
            if next.is_null() {
                return None;
            }
            // SAFETY: `next` is linked, so its producer is done with its message; only the
            // popper touches it from now on.
            let msg = unsafe { (*next).msg.with_mut(|m| (*m).take()) };
            // SAFETY: the popper owns `head`.
            unsafe { *head = next };
            // SAFETY: the old stub's `next` is linked: its producer is done with it, no
            // producer can reach it any more, and it is no longer the head.
            drop(unsafe { Box::from_raw(stub) });
            msg
        })
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // `&mut self`: no push or pop runs; every node from the stub on is reachable (a push
        // holds `&self` until it has linked its node).
        // SAFETY: `&mut self`: no popper runs.
        let mut node = self.head.with_mut(|head| unsafe { *head });
        while !node.is_null() {
            // SAFETY: each node is owned by the list and freed exactly once, here.
            let boxed = unsafe { Box::from_raw(node) };
            // ORDERING: Acquire, as a pop: the node's message is visible.
            node = boxed.next.load(Ordering::Acquire);
        }
    }
}
