//! What every service of the stack shares, the analogue of .NET Aspire's ServiceDefaults.
//!
//! A service reads its settings with [`config`], sets up logs and traces with
//! [`telemetry`], connects to PostgreSQL with [`db`], counts with [`metrics`],
//! serves `/health/*` and `/metrics` through [`http`], and stops on a signal
//! observed by [`shutdown`]. [`amqp`] opens broker sessions and [`backoff`]
//! spaces out retries. None of it depends on apphost: a service configured
//! by hand with the same environment variables behaves the same.

pub mod amqp;
pub mod backoff;
pub mod config;
pub mod db;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigError, Secret};
