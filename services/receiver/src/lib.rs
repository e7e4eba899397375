//! The receiver: consumes `EntityItemCreated` events from the broker and
//! stores them in its own PostgreSQL, effectively once.
//!
//! Messages flow through [`consumer`] (AMQP link, batching, settlement),
//! [`decode`] (message → event, or a poison verdict), and [`store`] (inbox +
//! projection in one transaction). [`startup`] wires them with the HTTP side
//! (health, metrics, the stored items) from [`configuration`].

pub mod configuration;
pub mod consumer;
pub mod decode;
pub mod metrics;
pub mod startup;
pub mod store;

pub use configuration::Settings;

/// The HTTP port without `PORT` or `HTTP_PORTS`.
pub const DEFAULT_PORT: u16 = 8081;
pub use startup::Application;
