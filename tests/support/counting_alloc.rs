//! A counting global allocator: live heap bytes of the whole process, for the memory tests.
//! Each test binary that includes this module (`#[path = "support/counting_alloc.rs"]`) gets
//! it as its global allocator, so such a binary holds a single test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

/// Bytes allocated and not yet freed. Invariant: changed by exactly the size of every
/// allocation, deallocation and reallocation, so it is the live total once they return.
static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (const-initialized, no destructor:
    /// usable from inside the allocator).
    static HERE: Cell<isize> = const { Cell::new(0) };
}

/// Adds `bytes` to both counters.
fn count(bytes: isize) {
    // ORDERING: a counter read after the measured work has returned on this thread.
    LIVE.fetch_add(bytes, Ordering::Relaxed);
    // A thread being torn down has no counter left: only the process total counts it.
    let _ = HERE.try_with(|here| here.set(here.get() + bytes));
}

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Live heap bytes now.
#[allow(dead_code)] // Not every binary that includes this module uses both counters.
pub fn live() -> isize {
    // ORDERING: as in `count`.
    LIVE.load(Ordering::Relaxed)
}

/// Bytes allocated and not freed by the calling thread: for work that runs on the calling
/// thread only (the test harness's own thread prints and allocates concurrently: once, under
/// load, its 1 KiB stdout buffer landed inside a measure of the process total).
#[allow(dead_code)]
pub fn thread_live() -> isize {
    HERE.with(Cell::get)
}
