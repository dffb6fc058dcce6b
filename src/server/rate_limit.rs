//! The inbound rate limit of one connection: a token bucket, and what happens over it.
//!
//! Each text or binary message takes a token; tokens refill at
//! [`per_second`](RateLimit::per_second) up to [`burst`](RateLimit::burst). A message that
//! finds no token is dropped (never reaches `on_message`) and answered with the
//! [reply frame](RateLimit::reply); a client that goes on sending with no token — more than
//! [`max_refusals`](RateLimit::max_refusals) refusals, each within a second of the previous
//! one — is closed with 1008. Control frames (ping, pong, close) are not limited.

use std::time::Duration;

use tokio::time::Instant;

use crate::hub::StreamHub;
use crate::message::{SocketMessage, Utf8Bytes};
use crate::socket::WebSocket;
use crate::sync::OnceLock;

/// Refusals further apart than this start a new count.
const REFUSAL_MEMORY: Duration = Duration::from_secs(1);

/// A connection's inbound message rate limit (see
/// [`ServerConfig::inbound_rate`](crate::server::ServerConfig::inbound_rate)).
///
/// The default — 50 messages a second, bursts of 100, closed after 20 refusals in a row —
/// is far above what a person typing (or a chat client's presence and typing notices) sends;
/// load generators and benchmarks set their own.
///
/// # Examples
///
/// ```
/// use nucleus_stream::server::{RateLimit, ServerConfig};
/// let config = ServerConfig::default()
///     .inbound_rate(Some(RateLimit::per_second(200).burst(400).max_refusals(50)));
/// # drop(config);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    per_second: u32,
    burst: u32,
    max_refusals: u32,
    reply: Utf8Bytes,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::per_second(50).burst(100)
    }
}

impl RateLimit {
    /// Sustained messages per second (at least 1); the burst defaults to twice this.
    pub fn per_second(n: u32) -> Self {
        let n = n.max(1);
        Self {
            per_second: n,
            burst: n.saturating_mul(2),
            max_refusals: 20,
            reply: Utf8Bytes::from_static(r#"{"type":"error","error":"rate limit exceeded"}"#),
        }
    }

    /// Messages accepted back to back after a quiet spell (at least 1).
    pub fn burst(mut self, n: u32) -> Self {
        self.burst = n.max(1);
        self
    }

    /// Refused messages, each within a second of the previous refusal, after which the
    /// connection is closed with 1008 (at least 1).
    pub fn max_refusals(mut self, n: u32) -> Self {
        self.max_refusals = n.max(1);
        self
    }

    /// The text frame sent for each refused message (default
    /// `{"type":"error","error":"rate limit exceeded"}`).
    pub fn reply(mut self, text: impl Into<String>) -> Self {
        self.reply = Utf8Bytes::from(text.into());
        self
    }
}

/// What to do with an inbound message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand it to the handler.
    Admit,
    /// Drop it; the reply frame has been queued.
    Refuse,
    /// Drop it and close the connection with 1008.
    Close,
}

/// One connection's bucket, plus the inbound accounting of the hub's totals. 24 bytes: the
/// limit is the service's (passed in, not stored), times are microseconds since a process-wide
/// epoch, and the tokens an `f32` (every connection holds one of these).
pub(crate) struct InboundGate {
    tokens: f32,
    refusals: u32,
    refilled: u64,
    /// When the last refusal was, or [`NO_REFUSAL`].
    last_refusal: u64,
}

/// `InboundGate::last_refusal` when there was none.
const NO_REFUSAL: u64 = u64::MAX;

/// The gates' time origin: the first time one looked at the clock.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds from the [`EPOCH`] to `at` (0 if earlier).
fn micros(at: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    // Exact differences: no rounding but the truncation to whole microseconds, the same
    // for every time (a test of a refill after exactly 100 ms failed when the first time
    // was rounded up from 0 to keep it non-zero).
    u64::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(NO_REFUSAL - 1)
}

impl InboundGate {
    pub(crate) fn new(limit: Option<&RateLimit>) -> Self {
        Self {
            tokens: limit.map_or(0.0, |l| l.burst as f32),
            refusals: 0,
            refilled: micros(Instant::now()),
            last_refusal: NO_REFUSAL,
        }
    }

    /// Decides about one message of `bytes` payload bytes from `socket` under the service's
    /// `limit`, counts it in the hub's totals, and on refusal queues the reply frame for the
    /// client.
    pub(crate) fn check(
        &mut self,
        limit: Option<&RateLimit>,
        hub: &StreamHub,
        socket: &WebSocket,
        bytes: usize,
    ) -> Verdict {
        let verdict = match limit {
            Some(limit) => self.decide(limit, Instant::now()),
            None => Verdict::Admit,
        };
        hub.record_inbound(bytes, verdict != Verdict::Admit);
        if let (Verdict::Refuse, Some(limit)) = (&verdict, limit) {
            // A full queue makes the client a slow consumer anyway; nothing more to do.
            let _ = socket
                .sender()
                .try_send(SocketMessage::Text(limit.reply.clone()));
        }
        verdict
    }

    /// Whether the last verdict was [`Verdict::Close`]: the gate keeps it (the refusals are
    /// over the limit's count until the connection ends), so a caller that reads ahead can
    /// act on it later.
    pub(crate) fn closing(&self, limit: Option<&RateLimit>) -> bool {
        limit.is_some_and(|limit| self.refusals > limit.max_refusals)
    }

    fn decide(&mut self, limit: &RateLimit, now: Instant) -> Verdict {
        let now = micros(now);
        let elapsed = now.saturating_sub(self.refilled) as f64 / 1e6;
        self.refilled = now;
        let tokens = f64::from(self.tokens) + elapsed * f64::from(limit.per_second);
        self.tokens = tokens.min(f64::from(limit.burst)) as f32;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Admit;
        }
        let memory = REFUSAL_MEMORY.as_micros() as u64;
        let recent =
            self.last_refusal != NO_REFUSAL && now.saturating_sub(self.last_refusal) <= memory;
        self.refusals = if recent { self.refusals + 1 } else { 1 };
        self.last_refusal = now;
        if self.refusals > limit.max_refusals {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_refusals_then_close_and_the_bucket_refills() {
        let limit = RateLimit::per_second(10).burst(3).max_refusals(2);
        let mut gate = InboundGate::new(Some(&limit));
        // Within the epoch's first microsecond (as happened in CI: the refill below came out
        // short when that time was rounded up to keep it non-zero).
        let t0 = *EPOCH.get().expect("set by new") + Duration::from_nanos(300);
        gate.refilled = micros(t0);
        let verdicts: Vec<_> = (0..6).map(|_| gate.decide(&limit, t0)).collect();
        use Verdict::*;
        assert_eq!(verdicts, [Admit, Admit, Admit, Refuse, Refuse, Close]);
        // 100 ms later one token has come back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(gate.decide(&limit, t1), Admit);
        // Refusals more than a second apart never add up to a close.
        let limit = RateLimit::per_second(1).burst(1).max_refusals(1);
        let mut gate = InboundGate::new(Some(&limit));
        gate.refilled = micros(t0);
        assert_eq!(gate.decide(&limit, t0), Admit);
        for i in 1..10u64 {
            let at = t0 + Duration::from_millis(1500 * i);
            assert_eq!(gate.decide(&limit, at), Admit, "a token every second");
            assert_eq!(
                gate.decide(&limit, at),
                Refuse,
                "then one refusal, forgotten by the next"
            );
        }
    }

    #[test]
    fn the_gate_is_small() {
        // Every connection holds one.
        assert_eq!(std::mem::size_of::<InboundGate>(), 24);
    }
}
