//! The hub: registration, rooms, broadcast, presence, stress, and the guide's snippets.

#[path = "../support/mod.rs"]
mod support;

mod broadcast_delivery;
mod guide;
mod history_recovery;
mod hub_registration;
mod hub_stress;
mod presence_devices;
mod presence_events;
mod room_large;
mod room_semantics;
