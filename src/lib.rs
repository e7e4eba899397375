//! apphost runs a message-driven stack from one `apphost.yaml`, as .NET
//! Aspire's AppHost does: containers and processes, connection strings,
//! health, logs, and a clean teardown, even after a crash.
//!
//! Data flows through:
//! - [`topology`]: the file, parsed and validated with line/column diagnostics;
//! - [`plan`]: runtimes, ports, passwords and the injected environment;
//! - [`build`]: `cargo build` of the `project` resources;
//! - [`runtime`]: docker containers or local processes behind one trait;
//! - [`supervisor`]: one job per instance, start order, health, restarts;
//! - [`logs`]: bounded per-resource output, shown by [`headless`] or the
//!   dashboard through [`view`]; [`monitor`] samples CPU, memory and the
//!   services' `/metrics`;
//! - [`control`]: the loopback API the CLI talks to; [`state`] keeps
//!   `.apphost/` (secrets, session, pids);
//! - [`app`] (`up`, `down`, `test`), [`scenario`] (the reliability
//!   scenarios), [`doctor`] and [`cli`]: the commands.

pub mod app;
pub mod build;
pub mod cli;
pub mod control;
pub mod doctor;
pub mod headless;
pub mod logs;
pub mod monitor;
pub mod plan;
pub mod runtime;
pub mod scenario;
pub mod state;
pub mod supervisor;
pub mod topology;
pub mod view;
