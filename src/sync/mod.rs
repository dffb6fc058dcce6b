//! The one place that names the crate's synchronization primitives.
//!
//! Every atomic, every protocol-bearing `Arc`, every `Mutex`, `UnsafeCell` and the arc-swap cell
//! the hub and the outbound queue use come through this module. One `cfg` picks the
//! implementation, as tokio's `src/loom/` does: [`std`](self) normally, and under
//! `--cfg nucleus_loom` the [loom](https://docs.rs/loom) versions, so that the model checker
//! explores every interleaving of the real code in `loom_tests/`. Both modules export the same
//! names with the same signatures. A crate-specific cfg is used instead of the conventional
//! `--cfg loom` because plain `loom` also removes `tokio::net`, which the transport needs; the
//! transport (`server` module) is compiled out of loom builds instead.
//!
//! Immutable strings (`Arc<str>` socket ids, user ids and room names) use `std::sync::Arc`
//! directly: they carry no synchronization protocol, only shared read-only bytes.

#[cfg(not(nucleus_loom))]
mod std;
#[cfg(not(nucleus_loom))]
pub(crate) use self::std::*;

#[cfg(nucleus_loom)]
mod loom;
#[cfg(nucleus_loom)]
pub(crate) use self::loom::*;

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
