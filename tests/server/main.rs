//! The bundled server over real WebSockets on loopback: handshake, heartbeats, faults,
//! slow consumers, lifecycle, shutdown, and the chat and echo examples.
#![cfg(feature = "server")]

#[path = "../support/mod.rs"]
#[macro_use]
mod support;

/// The chat example, compiled into this binary once for its protocol, history and metrics tests.
#[allow(dead_code)]
#[path = "../../examples/chat.rs"]
mod chat;

#[cfg(feature = "axum")]
mod axum_chat_example;
#[cfg(feature = "axum")]
mod axum_route;
mod chat_history;
mod chat_metrics;
mod chat_protocol;
mod echo_example;
mod server_bursts;
mod server_events;
mod server_faults;
mod server_handshake;
mod server_heartbeat;
mod server_lifecycle;
mod server_service;
mod server_shutdown;
mod server_slow_consumer;
mod server_wire;
