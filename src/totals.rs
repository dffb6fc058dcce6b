//! Running totals of a hub: traffic in and out, drops, and closes by reason.

use crate::disconnect::DisconnectReason;
use crate::report::BroadcastReport;
use crate::sync::{Ordering, StatU64 as AtomicU64};

/// Running totals of a hub since it was made (see [`StreamHub::totals`](crate::StreamHub::totals)).
///
/// "Out" counts deliveries *queued* for a socket (one per recipient of a broadcast); what a
/// transport then writes is that, minus what a closing connection discards. "In" counts what
/// transports reported receiving through [`StreamHub::record_inbound`](crate::StreamHub::record_inbound)
/// (the bundled server does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubTotals {
    /// Messages received from clients.
    pub messages_in: u64,
    /// Payload bytes received from clients.
    pub bytes_in: u64,
    /// Inbound messages refused by the rate limit (included in `messages_in`).
    pub rate_limited: u64,
    /// Deliveries queued for sockets (a broadcast to 100 members counts 100).
    pub messages_out: u64,
    /// Payload bytes of those deliveries.
    pub bytes_out: u64,
    /// Deliveries dropped by a full queue's policy (the new message, or evicted old ones).
    pub dropped: u64,
    /// Connections closed as slow consumers (also in `disconnects`).
    pub slow_consumer_closes: u64,
    /// Ended connections by reason, indexed as [`DisconnectReason::LABELS`].
    pub disconnects: [u64; 8],
}

impl HubTotals {
    /// Ended connections with this reason.
    pub fn disconnects_for(&self, reason: DisconnectReason) -> u64 {
        self.disconnects[reason.index()]
    }
}

/// The hub's counters. Each is a monotonic statistic: written with relaxed read-modify-writes
/// (exact, never lost) and read one by one (a snapshot is not atomic across counters).
pub(crate) struct Counters {
    /// Written by the message paths; aligned to 128 bytes so they do not share a cache line
    /// (or an adjacent-line prefetch pair) with the inbound ones.
    outbound: Outbound,
    inbound: Inbound,
    /// Ended connections per `DisconnectReason::index`.
    disconnects: [AtomicU64; 8],
}

#[repr(align(128))]
struct Outbound {
    messages: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

#[repr(align(128))]
struct Inbound {
    messages: AtomicU64,
    bytes: AtomicU64,
    rate_limited: AtomicU64,
}

impl Counters {
    pub(crate) fn new() -> Self {
        let zero = || AtomicU64::new(0);
        Self {
            outbound: Outbound {
                messages: zero(),
                bytes: zero(),
                dropped: zero(),
            },
            inbound: Inbound {
                messages: zero(),
                bytes: zero(),
                rate_limited: zero(),
            },
            disconnects: std::array::from_fn(|_| zero()),
        }
    }

    /// Counts a delivery of one message of `len` bytes.
    pub(crate) fn outbound(&self, report: &BroadcastReport, len: usize) {
        self.outbound_bytes(report, (report.queued * len) as u64);
    }

    /// Counts deliveries that queued `bytes` in all (a burst's messages differ in size).
    pub(crate) fn outbound_bytes(&self, report: &BroadcastReport, bytes: u64) {
        // ORDERING: statistics; no data depends on them.
        if report.queued > 0 {
            let out = &self.outbound;
            out.messages
                .fetch_add(report.queued as u64, Ordering::Relaxed);
            // ORDERING: as above.
            out.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        if report.dropped > 0 {
            // ORDERING: as above.
            self.outbound
                .dropped
                .fetch_add(report.dropped as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn inbound(&self, bytes: usize, rate_limited: bool) {
        // ORDERING: statistics.
        self.inbound.messages.fetch_add(1, Ordering::Relaxed);
        // ORDERING: statistics.
        self.inbound
            .bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        if rate_limited {
            // ORDERING: statistics.
            self.inbound.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn disconnect(&self, reason: DisconnectReason) {
        // ORDERING: statistics.
        self.disconnects[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HubTotals {
        // ORDERING (every load): statistics, read one by one.
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut disconnects = [0; 8];
        for (out, a) in disconnects.iter_mut().zip(&self.disconnects) {
            *out = load(a);
        }
        HubTotals {
            messages_in: load(&self.inbound.messages),
            bytes_in: load(&self.inbound.bytes),
            rate_limited: load(&self.inbound.rate_limited),
            messages_out: load(&self.outbound.messages),
            bytes_out: load(&self.outbound.bytes),
            dropped: load(&self.outbound.dropped),
            slow_consumer_closes: disconnects[DisconnectReason::SlowConsumer.index()],
            disconnects,
        }
    }
}

/// One socket's outbound queue at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketStats {
    /// The socket's id.
    pub id: std::sync::Arc<str>,
    /// Messages queued and not yet taken by the transport.
    pub queued_messages: usize,
    /// Payload bytes of those messages.
    pub queued_bytes: usize,
    /// Messages this queue has dropped so far under its overflow policy.
    pub dropped: u64,
}

impl SocketStats {
    pub(crate) fn of(socket: &crate::socket::WebSocket) -> Self {
        let sender = socket.sender();
        Self {
            id: std::sync::Arc::clone(&socket.id),
            queued_messages: sender.len(),
            queued_bytes: sender.queued_bytes(),
            dropped: sender.dropped(),
        }
    }
}
