//! The outbound queue: bounds and overflow policies, wake-ups, closing.

#[path = "../support/mod.rs"]
mod support;

mod queue_overflow;
mod queue_poll_closed;
mod queue_receiver;
mod queue_stress;
mod queue_wakeup;
