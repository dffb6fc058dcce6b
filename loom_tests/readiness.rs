//! A descriptor's readiness cell (`src/readiness.rs`), as the bundled server's reactor sets it
//! and a connection's task polls it: model (n) of the loom suite. The "kernel" is an atomic
//! count of bytes waiting, which the reactor thread raises before it reports the edge (as the
//! kernel queues data before epoll reports it).

use crate::support::*;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use nucleus_stream::{BOTH, READABLE, Readiness, WRITABLE};
use std::future::poll_fn;
use std::io;

/// Reads everything the "kernel" holds; `WouldBlock` when it holds nothing.
fn read_all(data: &AtomicUsize) -> io::Result<usize> {
    match data.swap(0, Ordering::SeqCst) {
        0 => Err(io::ErrorKind::WouldBlock.into()),
        n => Ok(n),
    }
}

/// The "kernel" gets one byte, then the reactor reports the edge: on a thread of its own.
fn arrive(cell: &Arc<Readiness>, data: &Arc<AtomicUsize>) -> thread::JoinHandle<()> {
    let (cell, data) = (Arc::clone(cell), Arc::clone(data));
    thread::spawn(move || {
        data.fetch_add(1, Ordering::SeqCst);
        cell.set(READABLE);
    })
}

/// What the task reads once the cell lets it (`short`: it clears after every read).
fn read(cell: &Readiness, data: &AtomicUsize, short: bool) -> usize {
    block_on(poll_fn(|cx| {
        cell.poll_io(cx, READABLE, || read_all(data), |_| short)
    }))
    .unwrap()
}

/// (n) A task that starts optimistic (a new cell is ready), finds nothing and clears, while
/// the reactor reports data arriving: the task always gets the data (no lost edge; a lost one
/// leaves it parked forever, which loom reports).
#[test]
fn n_an_edge_while_the_task_clears_is_not_lost() {
    model(|| {
        let cell = Arc::new(Readiness::new(BOTH));
        let data = Arc::new(AtomicUsize::new(0));
        let reactor = arrive(&cell, &data);
        assert_eq!(read(&cell, &data, false), 1);
        reactor.join().unwrap();
    });
}

/// (n) Two arrivals, two edges, and a task that clears after every read as a short read does
/// (edge-triggered: it read everything there was): both bytes arrive.
#[test]
fn n_short_reads_clear_without_losing_the_next_edge() {
    model(|| {
        let cell = Arc::new(Readiness::new(0));
        let data = Arc::new(AtomicUsize::new(0));
        let reactor = {
            let (cell, data) = (Arc::clone(&cell), Arc::clone(&data));
            thread::spawn(move || {
                for _ in 0..2 {
                    data.fetch_add(1, Ordering::SeqCst);
                    cell.set(READABLE);
                }
            })
        };
        let mut total = 0;
        while total < 2 {
            total += read(&cell, &data, true);
        }
        assert_eq!(total, 2);
        reactor.join().unwrap();
    });
}

/// (n) The owner goes (`reset`) while an edge meant for it is dispatched: no race on the
/// waker slot, and the next owner of the cell still gets its own edge.
#[test]
fn n_a_reset_racing_an_edge_leaves_a_usable_cell() {
    model(|| {
        let cell = Arc::new(Readiness::new(0));
        let first = block_on(poll_fn(|cx| {
            std::task::Poll::Ready(cell.poll_ready(cx, READABLE).is_pending())
        }));
        assert!(first, "nothing is ready yet");
        let reactor = {
            let cell = Arc::clone(&cell);
            thread::spawn(move || cell.set(READABLE))
        };
        cell.reset(WRITABLE);
        reactor.join().unwrap();
        let data = Arc::new(AtomicUsize::new(0));
        let next = arrive(&cell, &data);
        assert_eq!(read(&cell, &data, false), 1);
        next.join().unwrap();
    });
}
