//! What a broadcast did: [`BroadcastReport`].

use crate::queue::{PushError, Queued};

/// What a broadcast did, recipient by recipient.
///
/// `queued + closed + dropped` covers every recipient once, except that under
/// [`OverflowPolicy::DropOldest`](crate::OverflowPolicy::DropOldest) a recipient whose queue
/// made room counts in `queued` and its evicted messages count in `dropped`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastReport {
    /// Recipients whose queue accepted the message.
    pub queued: usize,
    /// Messages dropped by a full queue's policy (the new one, or evicted old ones).
    pub dropped: usize,
    /// Recipients whose queue was closed, or closed now as a slow consumer.
    pub closed: usize,
}

impl BroadcastReport {
    /// `queued + dropped + closed`: every recipient once (plus evictions, see above).
    pub fn total(&self) -> usize {
        self.queued + self.dropped + self.closed
    }

    /// Adds another report's counts to this one.
    pub fn add(&mut self, other: BroadcastReport) {
        self.queued += other.queued;
        self.dropped += other.dropped;
        self.closed += other.closed;
    }

    /// Counts one recipient's push outcome.
    pub(crate) fn record(&mut self, outcome: Result<Queued, PushError>) {
        match outcome {
            Ok(Queued::Plain) => self.queued += 1,
            Ok(Queued::DroppedOldest(n)) => {
                self.queued += 1;
                self.dropped += n as usize;
            }
            Err(PushError::Full(_)) => self.dropped += 1,
            Err(PushError::Closed(_)) => self.closed += 1,
        }
    }
}
