//! Where instances run: [`docker`] containers through the Docker Engine API,
//! or local [`process`]es. Both sit behind [`Runtime`]; what they start is an
//! [`Running`] the supervisor can wait on, stop, kill and probe.

pub mod docker;
pub mod output;
pub mod process;

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;

use crate::plan::{Instance, RuntimeKind};
pub use output::Output;

/// How an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "by", content = "value", rename_all = "lowercase")]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The runtime lost track of it (e.g. the container was removed).
    Unknown,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::Unknown => f.write_str("gone"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    pub message: String,
    /// What the user can do about it.
    pub help: Option<String>,
}

impl StartError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), help: None }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// What an instance uses, as the kernel (or the engine) counts it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU time used so far, all of its processes together.
    pub cpu_seconds: f64,
    /// Resident memory now.
    pub memory_bytes: u64,
}

/// A started instance.
pub trait Running: Send + Sync {
    /// Resolves once it has exited (any number of callers).
    fn exited(&self) -> BoxFuture<'_, Exit>;
    /// `signal` (to the process group, or the container), then SIGKILL after `grace`.
    fn stop(&self, signal: i32, grace: Duration) -> BoxFuture<'_, ()>;
    /// SIGKILL at once.
    fn kill(&self) -> BoxFuture<'_, ()>;
    /// Runs a health command where the instance lives; `Ok(exit code)`.
    fn exec(&self, command: Vec<String>, timeout: Duration) -> BoxFuture<'_, Result<i32, String>>;
    /// SIGSTOP / container pause, and back.
    fn pause(&self) -> BoxFuture<'_, Result<(), String>>;
    fn resume(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Cuts the instance off its network (`true`) or reconnects it.
    fn partition(&self, cut: bool) -> BoxFuture<'_, Result<(), String>>;
    /// A pid or a container id, for `ps`.
    fn id(&self) -> String;
    /// CPU time and memory; `None` when it cannot be read (it just ended).
    fn usage(&self) -> BoxFuture<'_, Option<Usage>>;
}

pub trait Runtime: Send + Sync {
    fn kind(&self) -> RuntimeKind;
    /// Prepares (image, data directory) and starts `instance`, sending its output to `out`.
    fn start<'a>(&'a self, instance: &'a Instance, out: Output) -> BoxFuture<'a, Result<Arc<dyn Running>, StartError>>;
    /// Removes what a non-persistent instance left (data, container, volume) at `down`.
    fn remove<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, ()>;
}

/// Resolves once the exit watched by `rx` is known.
pub(crate) fn wait_exit(rx: &tokio::sync::watch::Receiver<Option<Exit>>) -> BoxFuture<'static, Exit> {
    let mut rx = rx.clone();
    Box::pin(async move {
        match rx.wait_for(Option::is_some).await {
            Ok(exit) => exit.expect("waited for Some"),
            Err(_) => Exit::Unknown,
        }
    })
}

/// `{port:NAME}` in a health command becomes the instance's port as seen from
/// where the command runs.
pub fn expand_ports(command: &[String], port: impl Fn(&str) -> Option<u16>) -> Vec<String> {
    command
        .iter()
        .map(|arg| {
            let mut out = arg.clone();
            while let Some(start) = out.find("{port:") {
                let Some(len) = out[start..].find('}') else { break };
                let name = &out[start + 6..start + len];
                let value = port(name).map(|p| p.to_string()).unwrap_or_default();
                out.replace_range(start..=start + len, &value);
            }
            out
        })
        .collect()
}
