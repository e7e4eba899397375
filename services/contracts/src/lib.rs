//! The contracts between apphost, its dashboard and the services, as types
//! instead of strings formatted in one place and parsed in another
//! (`docs/contracts.md` says what each means):
//! - [`action`]: what can be done to a running resource, and how it is undone;
//! - [`endpoint`]: where a resource answers;
//! - [`metrics`]: the names of the services' Prometheus series, for the
//!   services that write them and apphost that reads them.

pub mod action;
pub mod endpoint;
pub mod metrics;

pub use action::Action;
pub use endpoint::Endpoint;
