//! The primitives of a `--cfg nucleus_loom` build: loom's, so the model checker sees every
//! access.

// `AtomicU32` is the server's (the heartbeat's beat counter) only.
#[cfg_attr(not(feature = "server"), allow(unused_imports))]
pub(crate) use loom::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence},
};

/// A write-once cell (the hub's cluster link: set once, then only read). loom has no
/// `OnceLock`; std's is used in both builds — no loom model attaches a cluster.
pub(crate) use std::sync::OnceLock;

/// The hash state of the crate's maps: fixed, because loom replays schedules and needs every
/// execution of a model to iterate a map (and so clone and drop its `Arc`s) in the same order.
pub(crate) type HashState =
    std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// Spin-loop hint: loom must see a yield to explore other threads.
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

/// Cache-line prefetch hint: nothing to model. (Its callers compile their hints out of
/// loom builds, where the queue is modeled without the layout they name.)
#[allow(dead_code)]
pub(crate) fn prefetch<T>(ptr: *const T, offset: usize) {
    let _ = (ptr, offset);
}

/// loom's `UnsafeCell`, which checks every access.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(loom::cell::UnsafeCell<T>);

impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a mutable pointer to the contents. The caller upholds exclusive access.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        self.0.with_mut(f)
    }
}

/// The arc-swap cell modelled as a loom `RwLock<Arc<T>>`.
///
/// arc-swap is linearizable (each load and store contains a `SeqCst` read-modify-write), so the
/// read-write lock is a faithful model of it: a load sees the last completed store and never a
/// torn value. Readers never block in the real implementation; loads are wait-free.
pub(crate) struct AtomicCell<T>(loom::sync::RwLock<Arc<T>>);

/// A loaded snapshot: dereferences to the value that was current at load time.
pub(crate) struct Loaded<T>(Arc<T>);

impl<T> core::ops::Deref for Loaded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> AtomicCell<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        Self(loom::sync::RwLock::new(value))
    }

    /// Loads the current value.
    pub(crate) fn load(&self) -> Loaded<T> {
        Loaded(self.load_full())
    }

    /// Loads the current value as an owned `Arc`.
    pub(crate) fn load_full(&self) -> Arc<T> {
        match self.0.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Publishes `value`; later loads see it.
    pub(crate) fn store(&self, value: Arc<T>) {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = value;
    }
}

/// Statistics counters (totals, advisory gates): no data depends on them, so they stay std
/// atomics and loom does not explore their commutative orderings.
pub(crate) use std::sync::atomic::{AtomicU64 as StatU64, AtomicUsize as StatUsize};
