//! The one place that names the crate's synchronization primitives.
//!
//! Every atomic, every protocol-bearing `Arc`, every `Mutex`, `UnsafeCell` and the arc-swap cell
//! the hub and the outbound queue use come through this module. Under `--cfg nucleus_loom`
//! they become [loom](https://docs.rs/loom) types so that the model checker explores every
//! interleaving of the real code in `loom_tests/`. A crate-specific cfg is used instead of the
//! conventional `--cfg loom` because plain `loom` also removes `tokio::net`, which the transport
//! needs; the transport (`server` module) is compiled out of loom builds instead.
//!
//! Immutable strings (`Arc<str>` socket ids, user ids and room names) use `std::sync::Arc`
//! directly: they carry no synchronization protocol, only shared read-only bytes.

#[cfg(not(nucleus_loom))]
pub(crate) use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering},
};

#[cfg(nucleus_loom)]
pub(crate) use loom::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering},
};

/// The hash state of the crate's maps: randomly keyed normally; fixed under loom, which
/// replays schedules and needs every execution of a model to iterate a map (and so clone and
/// drop its `Arc`s) in the same order.
#[cfg(not(nucleus_loom))]
pub(crate) type HashState = std::collections::hash_map::RandomState;
#[cfg(nucleus_loom)]
pub(crate) type HashState =
    std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// Locks `mutex`, ignoring poisoning.
///
/// No critical section in this crate calls user code, so a poisoned lock can only come from a
/// panic inside the crate's own bookkeeping, which leaves the protected data consistent (every
/// mutation is a single assignment at the end of the section).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Spin-loop hint that loom understands (it must see a yield to explore other threads).
pub(crate) fn spin_hint() {
    #[cfg(nucleus_loom)]
    loom::thread::yield_now();
    #[cfg(not(nucleus_loom))]
    std::hint::spin_loop();
}

/// An `UnsafeCell` with loom's closure-based access API, so loom can check every access.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T> {
    #[cfg(not(nucleus_loom))]
    cell: core::cell::UnsafeCell<T>,
    #[cfg(nucleus_loom)]
    cell: loom::cell::UnsafeCell<T>,
}

impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(not(nucleus_loom))]
            cell: core::cell::UnsafeCell::new(value),
            #[cfg(nucleus_loom)]
            cell: loom::cell::UnsafeCell::new(value),
        }
    }

    /// Runs `f` with a mutable pointer to the contents. The caller upholds exclusive access.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(nucleus_loom))]
        {
            f(self.cell.get())
        }
        #[cfg(nucleus_loom)]
        {
            self.cell.with_mut(f)
        }
    }
}

/// An atomically swappable `Arc<T>`: `arc_swap::ArcSwap` normally, a loom `RwLock<Arc<T>>`
/// under loom.
///
/// arc-swap is linearizable (each load and store contains a `SeqCst` read-modify-write), so the
/// read-write lock is a faithful model of it: a load sees the last completed store and never a
/// torn value. Readers never block in the real implementation; loads are wait-free.
pub(crate) struct AtomicCell<T> {
    #[cfg(not(nucleus_loom))]
    cell: arc_swap::ArcSwap<T>,
    #[cfg(nucleus_loom)]
    cell: loom::sync::RwLock<Arc<T>>,
}

/// A loaded snapshot: dereferences to the value that was current at load time.
pub(crate) struct Loaded<T> {
    #[cfg(not(nucleus_loom))]
    guard: arc_swap::Guard<Arc<T>>,
    #[cfg(nucleus_loom)]
    guard: Arc<T>,
}

impl<T> core::ops::Deref for Loaded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> AtomicCell<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        Self {
            #[cfg(not(nucleus_loom))]
            cell: arc_swap::ArcSwap::new(value),
            #[cfg(nucleus_loom)]
            cell: loom::sync::RwLock::new(value),
        }
    }

    /// Loads the current value without taking any lock (wait-free in arc-swap).
    pub(crate) fn load(&self) -> Loaded<T> {
        #[cfg(not(nucleus_loom))]
        {
            Loaded {
                guard: self.cell.load(),
            }
        }
        #[cfg(nucleus_loom)]
        {
            let guard = match self.cell.read() {
                Ok(g) => Arc::clone(&g),
                Err(p) => Arc::clone(&p.into_inner()),
            };
            Loaded { guard }
        }
    }

    /// Loads the current value as an owned `Arc`, for holders that outlive a short scope.
    pub(crate) fn load_full(&self) -> Arc<T> {
        #[cfg(not(nucleus_loom))]
        {
            self.cell.load_full()
        }
        #[cfg(nucleus_loom)]
        {
            match self.cell.read() {
                Ok(g) => Arc::clone(&g),
                Err(p) => Arc::clone(&p.into_inner()),
            }
        }
    }

    /// Publishes `value`; later loads see it.
    pub(crate) fn store(&self, value: Arc<T>) {
        #[cfg(not(nucleus_loom))]
        {
            self.cell.store(value);
        }
        #[cfg(nucleus_loom)]
        {
            let mut g = match self.cell.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *g = value;
        }
    }
}
