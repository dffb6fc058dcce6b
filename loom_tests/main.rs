//! Loom models of the hub's concurrency protocol, run against the crate's real code.
//!
//! Compiled only with `RUSTFLAGS="--cfg nucleus_loom"` (everywhere else this test target is
//! empty). Run the whole suite with:
//!
//! ```text
//! RUSTFLAGS="--cfg nucleus_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release --no-default-features --test loom --target-dir target/loom
//! ```
//!
//! Every model uses at most three threads (the model's main thread plus two) and a hub with
//! one index shard. Every model drops the hub, the sockets and the receivers before it ends,
//! so loom's leak check of `loom::sync::Arc` covers every snapshot, entry and queue.
#![cfg(nucleus_loom)]

mod support;

mod direct;
mod leaks;
mod presence;
mod queue;
mod rooms;
