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

/// One connection's bucket, plus the inbound accounting of the hub's totals.
pub(crate) struct InboundGate<'a> {
    /// The service's limit, borrowed: a copy would cost every connection its size.
    limit: Option<&'a RateLimit>,
    tokens: f64,
    refilled: Instant,
    refusals: u32,
    last_refusal: Option<Instant>,
}

impl<'a> InboundGate<'a> {
    pub(crate) fn new(limit: Option<&'a RateLimit>) -> Self {
        Self {
            tokens: limit.map_or(0.0, |l| f64::from(l.burst)),
            limit,
            refilled: Instant::now(),
            refusals: 0,
            last_refusal: None,
        }
    }

    /// Decides about one message of `bytes` payload bytes from `socket`, counts it in the
    /// hub's totals, and on refusal queues the reply frame for the client.
    pub(crate) fn check(&mut self, hub: &StreamHub, socket: &WebSocket, bytes: usize) -> Verdict {
        let verdict = self.decide(Instant::now());
        hub.record_inbound(bytes, verdict != Verdict::Admit);
        if let (Verdict::Refuse, Some(limit)) = (&verdict, self.limit) {
            // A full queue makes the client a slow consumer anyway; nothing more to do.
            let _ = socket
                .sender()
                .try_send(SocketMessage::Text(limit.reply.clone()));
        }
        verdict
    }

    fn decide(&mut self, now: Instant) -> Verdict {
        let Some(limit) = self.limit else {
            return Verdict::Admit;
        };
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens =
            (self.tokens + elapsed * f64::from(limit.per_second)).min(f64::from(limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Admit;
        }
        let recent = self
            .last_refusal
            .is_some_and(|at| now.saturating_duration_since(at) <= REFUSAL_MEMORY);
        self.refusals = if recent { self.refusals + 1 } else { 1 };
        self.last_refusal = Some(now);
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
        let t0 = Instant::now();
        gate.refilled = t0;
        let verdicts: Vec<_> = (0..6).map(|_| gate.decide(t0)).collect();
        use Verdict::*;
        assert_eq!(verdicts, [Admit, Admit, Admit, Refuse, Refuse, Close]);
        // 100 ms later one token has come back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(gate.decide(t1), Admit);
        // Refusals more than a second apart never add up to a close.
        let limit = RateLimit::per_second(1).burst(1).max_refusals(1);
        let mut gate = InboundGate::new(Some(&limit));
        gate.refilled = t0;
        assert_eq!(gate.decide(t0), Admit);
        for i in 1..10u64 {
            let at = t0 + Duration::from_millis(1500 * i);
            assert_eq!(gate.decide(at), Admit, "a token every second");
            assert_eq!(
                gate.decide(at),
                Refuse,
                "then one refusal, forgotten by the next"
            );
        }
    }

    #[test]
    fn no_limit_admits_everything() {
        let mut gate = InboundGate::new(None);
        let now = Instant::now();
        assert!((0..10_000).all(|_| gate.decide(now) == Verdict::Admit));
    }
}
