//! `apphost.yaml`: the model of an app ([`Topology`]), read from YAML with
//! line/column diagnostics ([`load`]), checked across resources
//! ([`validate`]) and ordered by dependencies ([`graph`]).

pub mod diagnostics;
pub mod graph;
mod parse;
pub mod schema;
mod validate;
pub(crate) mod yaml;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use miette::{NamedSource, SourceSpan};

pub use diagnostics::{Diag, InvalidTopology, LoadError};

pub use crate::kinds::Kind;

/// What `apphost.yaml` describes: an app of named resources.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The app's name: labels, container names and the `.apphost/` state hang off it.
    pub name: String,
    /// The file it was read from; relative paths in it are relative to its folder.
    pub file: PathBuf,
    pub runtime: RuntimeChoice,
    /// In file order.
    pub resources: Vec<Resource>,
    /// Resources whose `/metrics` feed the dashboard's outbox pane.
    pub metrics_from: Vec<String>,
}

impl Topology {
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// The folder the file is in.
    pub fn root(&self) -> &Path {
        self.file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeChoice {
    /// Docker when an engine answers, processes otherwise.
    #[default]
    Auto,
    Docker,
    Process,
}

impl RuntimeChoice {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "docker" => Some(Self::Docker),
            "process" => Some(Self::Process),
            _ => None,
        }
    }
}

/// A port a resource listens on. `target` is the port inside a container (or
/// the well-known port of a service kind); `host` is the loopback port on this
/// machine, picked free at start when not given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub target: Option<u16>,
    pub host: Option<u16>,
    pub span: SourceSpan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Started,
    Healthy,
    Completed,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WaitFor {
    pub name: String,
    pub condition: Condition,
    pub span: SourceSpan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A TCP connect to the named port.
    Tcp { port: String },
    /// A GET on `path` of the named port answering 2xx.
    Http { path: String, port: String },
    /// A command that exits 0 (run inside the container on docker).
    Exec { command: Vec<String> },
    /// A line of the resource's output matching a regular expression.
    Log { pattern: String },
    /// An AMQP 1.0 connection opened on the named port (SASL with the
    /// resource's user when it has one) within the probe's timeout: a broker
    /// that is paused or wedged accepts TCP but never opens.
    Amqp { port: String },
    /// A PostgreSQL startup handshake on the named port, as `pg_isready`
    /// does it (as the user and database of the resource's connection
    /// string): healthy once the server answers as anything but "starting
    /// up" or "shutting down" (no password is sent: the server asks for it,
    /// which is the answer). apphost runs it itself on every runtime, so it
    /// costs no process in the container; a published stack runs
    /// `pg_isready` ([`crate::plan::Instance::pg_isready`]).
    PgIsReady { port: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures, after the start period, before `Unhealthy`.
    pub retries: u32,
    /// Failures during this time after start do not count.
    pub start_period: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub policy: RestartPolicy,
    /// Restarts in a row before it is given up on as failed.
    pub max_restarts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// A run at least this long was stable: the count of restarts in a row
    /// and the backoff start again (as Kubernetes' backoff reset does).
    pub reset_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shutdown {
    pub signal: i32,
    pub grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Named {
    pub name: String,
    pub span: SourceSpan,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    pub span: SourceSpan,
    pub kind: Kind,
    pub image: Option<String>,
    /// `executable`: the program to run.
    pub command: Option<String>,
    /// `project`: the cargo package of this workspace (default: the resource name).
    pub package: Option<String>,
    pub args: Vec<String>,
    pub working_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<Port>,
    pub persistent: bool,
    pub references: Vec<Named>,
    pub wait_for: Vec<WaitFor>,
    pub health: Option<Probe>,
    pub restart: Restart,
    pub replicas: u32,
    pub shutdown: Shutdown,
    pub runtime: RuntimeChoice,
    /// `postgres`: the database created at first start.
    pub database: Option<String>,
    /// `postgres`/`artemis`: the user apphost creates (its password is generated).
    pub user: Option<String>,
}

impl Resource {
    pub fn port(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The image it runs on the docker runtime: its own, or its kind's default.
    pub fn image(&self) -> Option<String> {
        self.image.clone().or_else(|| self.kind.spec().default_image().map(str::to_owned))
    }
}

/// The closest of `candidates` to `word`, if close enough to be a typo.
pub fn did_you_mean<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    yaml::did_you_mean(word, candidates.iter().copied())
}

/// Reads and validates the topology at `path`. `APPHOST_APP_NAME`, when
/// set, renames the app (as compose's project name does), so a second copy
/// of a stack can run beside the first without touching it.
/// The largest topology file read: far above any real one, small enough that
/// parsing and checking it stays fast and bounded (`/dev/zero`, a log file
/// passed by mistake).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The most resources a topology may have.
pub const MAX_RESOURCES: usize = 256;

pub fn load(path: &Path) -> Result<Topology, LoadError> {
    use std::io::Read;
    let file = path.display().to_string();
    let read_error = |source| LoadError::Read { file: file.clone(), source };
    let handle = std::fs::File::open(path).map_err(read_error)?;
    let meta = handle.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(LoadError::TooLarge { file, what: "not a regular file".into(), limit: MAX_FILE_BYTES });
    }
    let mut bytes = Vec::new();
    handle.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let what = format!("{:.1} MiB", meta.len() as f64 / 1048576.0);
        return Err(LoadError::TooLarge { file, what, limit: MAX_FILE_BYTES });
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text ({e})")))
    })?;
    let mut topology = parse_str(path, &text)?;
    if let Some(name) = std::env::var("APPHOST_APP_NAME").ok().filter(|n| !n.is_empty()) {
        topology.name = name;
    }
    Ok(topology)
}

/// Parses and validates topology text as if read from `path`.
pub fn parse_str(path: &Path, text: &str) -> Result<Topology, LoadError> {
    let problems = match parse::parse(path, text) {
        Ok(topology) => match validate::validate(&topology) {
            problems if problems.is_empty() => return Ok(topology),
            problems => problems,
        },
        Err(problem) => vec![problem],
    };
    let file = path.display().to_string();
    Err(LoadError::Invalid(Box::new(InvalidTopology {
        source_code: NamedSource::new(&file, text.to_owned()).with_language("yaml"),
        file,
        problems,
    })))
}

/// `250ms`, `10s`, `2m`, `1h`, `1m30s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().ok()?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(seconds).ok()?;
        rest = tail;
    }
    Some(total)
}

#[cfg(test)]
mod tests;
