//! apphost runs a message-driven stack from one `apphost.yaml`, as .NET
//! Aspire's AppHost does: containers and processes, connection strings,
//! health, logs, and a clean teardown, even after a crash.
//!
//! Data flows through:
//! - [`topology`]: the file, parsed and validated with line/column diagnostics;
//! - [`kinds`]: what each kind of resource is (postgres, artemis, container,
//!   executable, project), asked by everything below;
//! - [`plan`]: runtimes, ports, passwords and the injected environment;
//!   [`ports`] holds the picked ports while their instances do not listen;
//! - [`build`]: `cargo build` of the `project` resources;
//! - [`runtime`]: docker containers or local processes behind one trait;
//! - [`supervisor`]: one job per instance, start order, health, restarts;
//! - [`logs`]: bounded per-resource output, shown by [`headless`] or the
//!   dashboard through [`view`]; [`monitor`] samples CPU, memory and the
//!   services' `/metrics`;
//! - [`control`]: the loopback API the CLI talks to; [`statedir`] keeps
//!   `.apphost/` (secrets, session, pids);
//! - [`root`]: the composition root, from a topology to a running app and
//!   back, owning the app's cancellation and tasks;
//! - [`cli`] parses the command line and [`commands`] carries out each verb;
//!   [`scenario`] holds the reliability scenarios `apphost test` runs.

pub mod bench;
pub mod build;
pub mod cli;
pub mod commands;
pub mod control;
pub mod headless;
pub mod kinds;
pub mod logs;
pub mod loopback;
pub mod monitor;
pub mod otlp;
pub mod plan;
pub mod ports;
pub mod publish;
pub mod root;
pub mod runtime;
pub mod scenario;
pub mod statedir;
pub mod supervisor;
pub mod topology;
pub mod view;
