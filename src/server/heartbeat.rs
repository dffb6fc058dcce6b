//! Heartbeats by one shared sweep instead of a timer per connection.
//!
//! A service runs one sweep task while it serves connections. Every [`period`](Heartbeat)
//! it advances the service's beat counter and wakes each registered connection (through
//! its outbound queue's waker, the same wake-up a queued message uses). A connection keeps
//! three counters ([`Pulse`], 12 bytes) where it used to keep a tokio `Sleep` and the
//! `Instant` of its last input (96 + 16 bytes of every connection's future, measured with
//! `-Zprint-type-sizes`), and reads no clock per message.
//!
//! The period is at most half the shorter of the ping interval and the idle timeout, and
//! divides the idle timeout (as uSockets, which uWebSockets runs on, sweeps its sockets'
//! timeouts every few seconds instead of arming a timer per socket). Counting in periods
//! keeps the promises of the config:
//!
//! - **Never early.** A connection closes as idle after `idle_after` sweeps without input:
//!   the first sweep after an input can come at once, the others a full period apart, so
//!   `idle_after = ceil(idle_timeout / period) + 1` sweeps span at least the idle timeout.
//! - **Late by at most one period** (plus the wake-up): the period divides the idle timeout,
//!   so the same count spans at most the idle timeout plus one period.
//! - Pings go out every `ping_every = round(ping_interval / period)` sweeps: within half a
//!   period of the ping interval.
//!
//! A connection reads the counter after its queue's waker is registered, and the sweep
//! advances the counter before it wakes: the register-then-check / store-then-wake order of
//! the queue's own wake-up (loom model (g)), so a sweep is never missed; several sweeps
//! between two polls (a handler that took long) count as several.

use std::time::Duration;

use crate::server::config::ServerConfig;
use crate::sync::{AtomicU32, Ordering};

/// The service's beat: the sweep period, the counter it advances, and the counts of
/// periods that make a ping and an idle close.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    /// Sweeps so far (wrapping). Invariant: advanced only by the service's sweep task, before
    /// it wakes the connections; a connection's [`Pulse::seen`] is a value it read here.
    beats: AtomicU32,
    period: Duration,
    ping_every: u32,
    idle_after: u32,
}

impl Heartbeat {
    /// The beat for `config`'s ping interval and idle timeout.
    pub(crate) fn new(config: &ServerConfig) -> Self {
        let nanos = |d: Duration| d.as_nanos().max(1);
        let (ping, idle) = (nanos(config.ping_interval), nanos(config.idle_timeout));
        // At most half the shorter of the two, and (rounded up to the nanosecond) a whole
        // fraction of the idle timeout, so that whole periods overshoot it by at most one.
        let most = (ping.min(idle) / 2).max(1_000_000);
        let parts = idle.div_ceil(most).max(1);
        let period = idle.div_ceil(parts).max(1_000_000);
        let count = |n: u128| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            beats: AtomicU32::new(0),
            period: Duration::from_nanos(u64::try_from(period).unwrap_or(u64::MAX)),
            ping_every: count(((ping + period / 2) / period).max(1)),
            idle_after: count(idle.div_ceil(period)).saturating_add(1),
        }
    }

    /// Time between two sweeps.
    pub(crate) fn period(&self) -> Duration {
        self.period
    }

    /// Advances the counter; the sweep then wakes every connection.
    pub(crate) fn advance(&self) {
        // ORDERING: the counter carries no other data; what makes a woken connection see the
        // new value is the wake that follows (the queue waker's read-modify-writes).
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    fn beats(&self) -> u32 {
        // ORDERING: as in `advance`.
        self.beats.load(Ordering::Relaxed)
    }

    /// A new connection's pulse, starting at the current beat.
    pub(crate) fn pulse(&self) -> Pulse {
        Pulse {
            seen: self.beats(),
            quiet: 0,
            since_ping: 0,
        }
    }
}

/// What a connection does at a beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing is due.
    Nothing,
    /// Send a ping.
    Ping,
    /// Nothing arrived for the idle timeout: close.
    Idle,
}

/// One connection's heartbeat state: the last beat it saw, and the beats since its last
/// input and since its last ping.
#[derive(Debug)]
pub(crate) struct Pulse {
    seen: u32,
    quiet: u32,
    since_ping: u32,
}

impl Pulse {
    /// Input arrived: the idle count starts again.
    pub(crate) fn activity(&mut self) {
        self.quiet = 0;
    }

    /// Beats the service made since this pulse last looked, if any, taken.
    pub(crate) fn take_beats(&mut self, heartbeat: &Heartbeat) -> Option<u32> {
        let now = heartbeat.beats();
        let n = now.wrapping_sub(self.seen);
        self.seen = now;
        (n != 0).then_some(n)
    }

    /// What `beats` more beats call for.
    pub(crate) fn on_beats(&mut self, beats: u32, heartbeat: &Heartbeat) -> Beat {
        self.quiet = self.quiet.saturating_add(beats);
        self.since_ping = self.since_ping.saturating_add(beats);
        if self.quiet >= heartbeat.idle_after {
            Beat::Idle
        } else if self.since_ping >= heartbeat.ping_every {
            self.since_ping = 0;
            Beat::Ping
        } else {
            Beat::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(ping_ms: u64, idle_ms: u64) -> Heartbeat {
        Heartbeat::new(
            &ServerConfig::default()
                .ping_interval(Duration::from_millis(ping_ms))
                .idle_timeout(Duration::from_millis(idle_ms)),
        )
    }

    /// Simulates a silent connection whose input stopped at `phase` ms before the next
    /// sweep; returns (ms from the input to the idle close, ping times).
    fn silent(hb: &Heartbeat, phase: f64) -> (f64, Vec<f64>) {
        let period = hb.period().as_secs_f64() * 1e3;
        let mut pulse = hb.pulse();
        pulse.activity();
        let mut t = phase;
        let mut pings = Vec::new();
        loop {
            hb.advance();
            let n = pulse.take_beats(hb).expect("a beat was made");
            match pulse.on_beats(n, hb) {
                Beat::Idle => return (t, pings),
                Beat::Ping => pings.push(t),
                Beat::Nothing => {}
            }
            t += period;
        }
    }

    #[test]
    fn an_idle_close_is_never_early_and_at_most_one_period_late() {
        for (ping, idle) in [
            (40, 250),
            (30_000, 75_000),
            (60_000, 300),
            (30, 400),
            (1, 1),
        ] {
            let hb = heartbeat(ping, idle);
            let period = hb.period().as_secs_f64() * 1e3;
            for phase in [0.001, 0.25, 0.5, 0.999].map(|f| f * period) {
                let (closed_at, _) = silent(&hb, phase);
                assert!(
                    closed_at >= idle as f64,
                    "ping {ping} idle {idle} phase {phase}: closed at {closed_at} ms"
                );
                assert!(
                    closed_at <= idle as f64 + period + 1e-3,
                    "ping {ping} idle {idle} phase {phase}: closed at {closed_at} ms, period {period}"
                );
            }
        }
    }

    #[test]
    fn pings_go_out_at_the_ping_interval() {
        for (ping, idle) in [(40, 250), (30_000, 75_000), (30, 400), (7, 1000)] {
            let hb = heartbeat(ping, idle);
            let half_period = hb.period().as_secs_f64() * 1e3 / 2.0;
            let (_, pings) = silent(&hb, 1.0);
            let gaps: Vec<f64> = pings.windows(2).map(|w| w[1] - w[0]).collect();
            assert!(pings.len() >= 2, "ping {ping} idle {idle}: {pings:?}");
            assert!(
                gaps.iter()
                    .all(|&g| (g - ping as f64).abs() <= half_period + 1e-6),
                "ping {ping} idle {idle}: {gaps:?}"
            );
        }
    }

    #[test]
    fn input_restarts_the_idle_count_and_missed_beats_all_count() {
        let hb = heartbeat(40, 250);
        let mut pulse = hb.pulse();
        for _ in 0..100 {
            hb.advance();
            let n = pulse.take_beats(&hb).unwrap();
            assert_ne!(pulse.on_beats(n, &hb), Beat::Idle, "input keeps it alive");
            pulse.activity();
        }
        assert_eq!(pulse.take_beats(&hb), None, "no beat since the last look");
        // A connection busy for many periods sees them all at once.
        for _ in 0..hb.idle_after {
            hb.advance();
        }
        let n = pulse.take_beats(&hb).unwrap();
        assert_eq!(n, hb.idle_after);
        assert_eq!(pulse.on_beats(n, &hb), Beat::Idle);
    }
}
