//! Loom models of the hub's concurrency protocol, run against the crate's real code.
//!
//! Compiled only with `RUSTFLAGS="--cfg nucleus_loom"` (everywhere else this test target is
//! empty). Run the whole suite with:
//!
//! ```text
//! RUSTFLAGS="--cfg nucleus_loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --no-default-features --test loom --target-dir target/loom
//! ```
//!
//! (`--nocapture` also prints how many executions loom explored per model.)
//!
//! Under `nucleus_loom` a room chunk holds 4 members (512 otherwise), so model (i) reaches the
//! cross-chunk move of `RoomCell::remove`. Adding `--cfg nucleus_loom_planted_bug` plants a
//! bug in that move (the shrunk last chunk is published before the hole is filled); model (i)
//! must then FAIL, which shows it can:
//!
//! ```text
//! RUSTFLAGS="--cfg nucleus_loom --cfg nucleus_loom_planted_bug" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --no-default-features --test loom --target-dir target/loom-planted \
//!     -- i_leave
//! ```
//!
//! Likewise `--cfg nucleus_loom_planted_presence_bug` emits a leave's presence event after the
//! room's writer lock is released; model (k) must then FAIL (a `Left` arriving after the
//! racing join's `Joined`):
//!
//! ```text
//! RUSTFLAGS="--cfg nucleus_loom --cfg nucleus_loom_planted_presence_bug" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --no-default-features --test loom --target-dir target/loom-planted \
//!     -- k_room
//! ```
//!
//! And `--cfg nucleus_loom_planted_readiness_bug` makes a readiness clear ignore the tick
//! (it clears an edge that arrived after the task looked); model (n) must then FAIL (the task
//! parks with data waiting, a deadlock loom reports):
//!
//! ```text
//! RUSTFLAGS="--cfg nucleus_loom --cfg nucleus_loom_planted_readiness_bug" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --no-default-features --test loom --target-dir target/loom-planted \
//!     -- n_an_edge
//! ```
//!
//! Every model uses at most three threads (the model's main thread plus two) and a hub with
//! one index shard. Every model drops the hub, the sockets and the receivers before it ends,
//! so loom's leak check of `loom::sync::Arc` covers every snapshot, entry and queue.
//!
//! | model | file |
//! | --- | --- |
//! | (a) `join_room` vs `unregister`; (b) emptying leave vs join; (c) two creating joins; (d) broadcast vs join and leave; (i) broadcast vs a leave that moves a member across chunks | `rooms.rs` |
//! | (e) presence of one user's devices; (k) one user's room presence events vs the final presence | `presence.rs` |
//! | (f) `send_to` / `send_to_user` vs register and unregister | `direct.rs` |
//! | (g) the outbound queue: producers, a parking consumer (also one taking batches), each overflow policy at its bound | `queue.rs` |
//! | (j) the history seam: a join with `since` racing one or two publishers (exact replay + live, in order); planted bug `--cfg nucleus_loom_planted_bug_history` | `history.rs` |
//! | (l) the cluster ring seam: a join through the ring racing the subscriber's Redis offsets (trusted ring; idle ring seeded at the position read from Redis); same planted bug | `history.rs` |
//! | (m) the queue's item storage (`Segments`, 2 slots per segment under loom): two producers and a consumer across segments and retirements; a producer popping as `DropOldest` does; values left queued at drop | `segments.rs` |
//! | (n) the server's readiness cell (`Readiness`): an edge racing the task's clear; short reads that clear; an owner's reset racing an edge; planted bug `--cfg nucleus_loom_planted_readiness_bug` (a clear that ignores the tick) | `readiness.rs` |
//! | (h) reclamation: no leaked `Arc`, snapshots outliving membership and the hub | `leaks.rs` (and every model) |
#![cfg(nucleus_loom)]

mod support;

mod direct;
mod history;
mod leaks;
mod presence;
mod queue;
mod readiness;
mod rooms;
mod segments;
