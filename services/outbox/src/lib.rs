//! A transactional outbox for PostgreSQL, relayed to an AMQP 1.0 broker at least once.
//!
//! A service writes its domain rows and an outbox row in one transaction
//! ([`enqueue`]), then pokes the relay ([`Wakeup`]). The relay claims a batch
//! of due rows, sends them pipelined over one AMQP link, and deletes exactly
//! the rows the broker Accepted, in the same transaction. Data flows through:
//!
//! - [`schema`]: the `outbox` and `outbox_dead_letter` tables, migrated at start;
//! - [`enqueue`]: the write side, used inside the caller's transaction;
//! - [`message`]: the wire format every message follows (`docs/contracts.md`);
//! - [`broker`]: one connection, session and sender link, rebuilt after faults;
//! - [`relay`]: the claim → send → settle loop with backoff and dead-lettering;
//! - [`metrics`]: the `outbox_*` metrics the dashboard reads.

pub mod broker;
pub mod enqueue;
pub mod message;
pub mod metrics;
pub mod relay;
pub mod schema;

pub use broker::BrokerSettings;
pub use enqueue::{NewMessage, Wakeup, enqueue};
pub use metrics::OutboxMetrics;
pub use relay::{BatchOutcome, Relay, RelayError, RelaySettings};
