//! End-to-end load generator for the chat example, over loopback WebSockets.
//!
//! N subscribers and P publishers connect to the chat server (`examples/chat.rs`), join
//! rooms, and publishers send `{"action":"message","room":R,"text":T}` where T carries the
//! publisher's index, a per-publisher sequence number and the send timestamp, padded to
//! `--size` bytes. Every member of the room (the sender included) receives
//! `{"type":"message",...,"text":T}`; the generator counts deliveries, checks per-publisher
//! sequence numbers on every connection (so loss, duplicates and reordering are exact), and
//! records latency (receive time − send time, one clock in one process).
//!
//! Modes:
//! - **fixed rate** (`--rate R`: messages per second per publisher) or **saturating**
//!   (default): each publisher keeps at most `--window W` messages in flight, where a message
//!   is in flight until every member of its room has received it.
//! - **idle** (`--idle`): connects N sockets, joins them (100 per room unless `--rooms`),
//!   waits for the server to settle and reports the server's RSS per connection.
//!
//! Given `--server-pid`, it reads the server's CPU time (all threads, `/proc/<pid>/task/*/schedstat`)
//! and RSS (`/proc/<pid>/status`) before and after the measured phase, and reports server CPU
//! per delivered message. It raises its own open-files limit to the hard limit and says so when
//! that limit caps N. Every run ends by itself (`--duration`, `--count`, `--drain-timeout`).
//!
//! Loopback only: the URL's host must be 127.0.0.0/8, `localhost` or `[::1]`.
//!
//! ```text
//! cargo build --release --example chat --example loadgen
//! taskset -c 0 target/release/examples/chat 127.0.0.1:9001 & SERVER=$!
//! taskset -c 1 target/release/examples/loadgen --server-pid $SERVER --subscribers 1000 --duration 10
//! taskset -c 1 target/release/examples/loadgen --server-pid $SERVER --idle --subscribers 10000
//! kill $SERVER
//! ```

mod args;
mod churn;
mod client;
mod histogram;
mod idle;
mod procfs;
mod publish;

use std::process::ExitCode;

use crate::args::{USAGE, parse_args};

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(publish::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
