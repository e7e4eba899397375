//! The sender: a REST API for entity items whose every write also commits an
//! outbox row, relayed to the broker by the `outbox` crate.
//!
//! Requests flow through [`configuration`] (environment → [`Settings`]),
//! [`startup`] (pool, migrations, relays, server) and [`routes`] (HTTP ↔ the
//! `entity-items` domain, errors as problem details).

pub mod configuration;
pub mod idempotency;
pub mod openapi;
pub mod routes;
pub mod startup;
pub mod writes;

pub use configuration::Settings;

/// The HTTP port without `PORT` or `HTTP_PORTS`.
pub const DEFAULT_PORT: u16 = 8080;
pub use startup::Application;
