//! The primitives of a normal build: `std` and arc-swap.

// `AtomicU32` is the server's (the heartbeat's beat counter) only.
#[cfg_attr(not(feature = "server"), allow(unused_imports))]
pub(crate) use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence},
};

/// A write-once cell (the hub's cluster link: set once, then only read).
pub(crate) use std::sync::OnceLock;

/// The hash state of the crate's maps: randomly keyed.
pub(crate) type HashState = std::collections::hash_map::RandomState;

/// Spin-loop hint.
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}

/// Asks the CPU to fetch the cache line holding the byte `offset` bytes past `ptr`. Only a
/// hint: it reads nothing in the language's sense and cannot fault, so any address will do
/// (a wrong one wastes the hint).
#[inline(always)]
pub(crate) fn prefetch<T>(ptr: *const T, offset: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` never dereferences in the language's sense; `wrapping_add`
    // keeps the address computation defined for any pointer.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            ptr.cast::<i8>().wrapping_add(offset),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, offset);
}

/// `core::cell::UnsafeCell` behind loom's closure-based access API.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a mutable pointer to the contents. The caller upholds exclusive access.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// An atomically swappable `Arc<T>`: `arc_swap::ArcSwap`. Loads are wait-free.
pub(crate) struct AtomicCell<T>(arc_swap::ArcSwap<T>);

/// A loaded snapshot: dereferences to the value that was current at load time.
pub(crate) struct Loaded<T>(arc_swap::Guard<Arc<T>>);

impl<T> core::ops::Deref for Loaded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> AtomicCell<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        Self(arc_swap::ArcSwap::new(value))
    }

    /// Loads the current value without taking any lock (wait-free in arc-swap).
    pub(crate) fn load(&self) -> Loaded<T> {
        Loaded(self.0.load())
    }

    /// Loads the current value as an owned `Arc`, for holders that outlive a short scope.
    pub(crate) fn load_full(&self) -> Arc<T> {
        self.0.load_full()
    }

    /// Publishes `value`; later loads see it.
    pub(crate) fn store(&self, value: Arc<T>) {
        self.0.store(value);
    }
}

/// Statistics counters (totals, advisory gates): no data depends on them. Under loom they stay
/// std atomics, so the model checker does not explore their commutative orderings.
pub(crate) use std::sync::atomic::{AtomicU64 as StatU64, AtomicUsize as StatUsize};
