//! The hub's figures through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`, on by default): the application installs whichever exporter it likes
//! (Prometheus, StatsD, …) and calls [`StreamHub::record_metrics`] on its own schedule —
//! typically right before each scrape. Nothing is recorded on the message paths themselves:
//! they only bump the hub's own counters, so an application without a recorder pays nothing.
//!
//! | name | kind | unit | what |
//! | --- | --- | --- | --- |
//! | `nucleus_connections` | gauge | count | registered sockets |
//! | `nucleus_online_users` | gauge | count | users with at least one socket |
//! | `nucleus_rooms` | gauge | count | rooms with at least one member |
//! | `nucleus_queued_messages` | gauge | count | messages waiting in every outbound queue |
//! | `nucleus_queued_bytes` | gauge | bytes | payload bytes waiting in every outbound queue |
//! | `nucleus_deepest_queue_messages` | gauge | count | the longest outbound queue |
//! | `nucleus_messages_received_total` | counter | count | messages received from clients |
//! | `nucleus_received_bytes_total` | counter | bytes | their payload bytes |
//! | `nucleus_messages_rate_limited_total` | counter | count | received messages refused by the inbound rate limit |
//! | `nucleus_messages_queued_total` | counter | count | deliveries queued for sockets (a broadcast to N members counts N) |
//! | `nucleus_queued_bytes_total` | counter | bytes | their payload bytes |
//! | `nucleus_messages_dropped_total` | counter | count | deliveries dropped by a full queue's policy |
//! | `nucleus_slow_consumer_closes_total` | counter | count | connections closed as slow consumers |
//! | `nucleus_disconnects_total{reason}` | counter | count | ended connections, by [`DisconnectReason::label`](crate::DisconnectReason::label) |
//! | `nucleus_users_went_online_total` | counter | count | a user's first socket registered |
//! | `nucleus_users_went_offline_total` | counter | count | a user's last socket unregistered |

use ::metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

use crate::disconnect::DisconnectReason;
use crate::hub::StreamHub;

impl StreamHub {
    /// Publishes the hub's current figures (see the [table](crate::metrics_export)) to the
    /// installed `metrics` recorder: counters as absolute values, gauges as levels. Cost: one
    /// lock-free pass over the sockets (for the queue gauges) and the rooms.
    ///
    /// # Examples
    ///
    /// ```
    /// # use nucleus_stream::StreamHub;
    /// let hub = StreamHub::new();
    /// // With no recorder installed this records into the void; install an exporter first.
    /// hub.record_metrics();
    /// ```
    pub fn record_metrics(&self) {
        describe();
        let stats = self.stats();
        let totals = self.totals();
        let (queued, queued_bytes, deepest) = self.queue_levels();
        gauge!("nucleus_connections").set(stats.connections as f64);
        gauge!("nucleus_online_users").set(stats.online_users as f64);
        gauge!("nucleus_rooms").set(stats.rooms as f64);
        gauge!("nucleus_queued_messages").set(queued as f64);
        gauge!("nucleus_queued_bytes").set(queued_bytes as f64);
        gauge!("nucleus_deepest_queue_messages").set(deepest as f64);
        counter!("nucleus_messages_received_total").absolute(totals.messages_in);
        counter!("nucleus_received_bytes_total").absolute(totals.bytes_in);
        counter!("nucleus_messages_rate_limited_total").absolute(totals.rate_limited);
        counter!("nucleus_messages_queued_total").absolute(totals.messages_out);
        counter!("nucleus_queued_bytes_total").absolute(totals.bytes_out);
        counter!("nucleus_messages_dropped_total").absolute(totals.dropped);
        counter!("nucleus_slow_consumer_closes_total").absolute(totals.slow_consumer_closes);
        for (label, n) in DisconnectReason::LABELS.iter().zip(totals.disconnects) {
            counter!("nucleus_disconnects_total", "reason" => *label).absolute(n);
        }
        counter!("nucleus_users_went_online_total").absolute(stats.users_went_online);
        counter!("nucleus_users_went_offline_total").absolute(stats.users_went_offline);
    }
}

fn describe() {
    let gauges = [
        ("nucleus_connections", Unit::Count, "registered sockets"),
        (
            "nucleus_online_users",
            Unit::Count,
            "users with at least one socket",
        ),
        (
            "nucleus_rooms",
            Unit::Count,
            "rooms with at least one member",
        ),
        (
            "nucleus_queued_messages",
            Unit::Count,
            "messages waiting in outbound queues",
        ),
        (
            "nucleus_queued_bytes",
            Unit::Bytes,
            "payload bytes waiting in outbound queues",
        ),
        (
            "nucleus_deepest_queue_messages",
            Unit::Count,
            "the longest outbound queue",
        ),
    ];
    for (name, unit, help) in gauges {
        describe_gauge!(name, unit, help);
    }
    let counters = [
        (
            "nucleus_messages_received_total",
            Unit::Count,
            "messages received from clients",
        ),
        (
            "nucleus_received_bytes_total",
            Unit::Bytes,
            "payload bytes received from clients",
        ),
        (
            "nucleus_messages_rate_limited_total",
            Unit::Count,
            "received messages refused by the inbound rate limit",
        ),
        (
            "nucleus_messages_queued_total",
            Unit::Count,
            "deliveries queued for sockets",
        ),
        (
            "nucleus_queued_bytes_total",
            Unit::Bytes,
            "payload bytes of deliveries queued",
        ),
        (
            "nucleus_messages_dropped_total",
            Unit::Count,
            "deliveries dropped by a full queue",
        ),
        (
            "nucleus_slow_consumer_closes_total",
            Unit::Count,
            "connections closed as slow consumers",
        ),
        (
            "nucleus_disconnects_total",
            Unit::Count,
            "ended connections by reason",
        ),
        (
            "nucleus_users_went_online_total",
            Unit::Count,
            "a user's first socket registered",
        ),
        (
            "nucleus_users_went_offline_total",
            Unit::Count,
            "a user's last socket unregistered",
        ),
    ];
    for (name, unit, help) in counters {
        describe_counter!(name, unit, help);
    }
}
