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

pub use configuration::Settings;
pub use startup::Application;
