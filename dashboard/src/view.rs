//! The narrow interface between the dashboard and whatever runs the stack.
//!
//! The dashboard reads plain view structs through [`Stack`] and sends
//! [`Action`]s back; it never sees Docker, processes or the supervisor.
//! apphost implements [`Stack`] over its supervisor, log store and metrics
//! scraper; tests implement it over fixed data.

use std::sync::Arc;

use chrono::{DateTime, Utc};
pub use contracts::{Action, Endpoint};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::telemetry::{LogFilter, LogRecord, Stats, Trace, TraceFilter, TraceSummary};

/// What the resources pane shows of one resource (or replica).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    pub kind: String,
    /// `docker` or `process`.
    pub runtime: String,
    pub phase: Phase,
    /// `running`, `stopped`, `exited (exit code 1)`, …
    pub state: String,
    pub health: Health,
    pub endpoints: Vec<Endpoint>,
    /// A message broker: stopping it asks first, and `b` toggles it.
    #[serde(default)]
    pub broker: bool,
    pub restarts: u32,
    /// Since when it runs; `None` while it does not.
    pub up_since: Option<DateTime<Utc>>,
    /// Percent of one core, averaged over the last sample interval.
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
}

/// Where a resource is in its life, coarsely: what colour it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Waiting,
    Starting,
    Up,
    Stopping,
    Stopped,
    /// Ended on its own (or crashed); `state` says how.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// No probe result yet, or nothing to probe.
    Unknown,
    Healthy,
    Unhealthy,
}

/// A lifecycle change, health flip, restart or chaos action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub resource: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// apphost's own line about the resource (lifecycle, build).
    System,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Increases with every line of the stack, across resources.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub resource: Arc<str>,
    pub stream: Stream,
    pub text: String,
}

/// The outbox pipeline's numbers, one point per scrape, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    /// Seconds between two points.
    pub interval_seconds: f64,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub kind: SeriesKind,
    /// `None` where the value was unknown (the source did not answer).
    pub points: Vec<Option<f64>>,
}

impl Series {
    pub fn last(&self) -> Option<f64> {
        self.points.last().copied().flatten()
    }
}

/// What a series measures: its label and unit follow from it, and so does how it is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    Pending,
    OldestPending,
    Published,
    /// Whether the relay holds a live link to the broker.
    Relay,
    DeadLettered,
    Processed,
    Duplicates,
    /// Poison messages rejected to the DLQ.
    Rejected,
    EndToEndP50,
    EndToEndP99,
}

impl SeriesKind {
    pub fn label(self) -> &'static str {
        match self {
            SeriesKind::Pending => "pending",
            SeriesKind::OldestPending => "oldest pending",
            SeriesKind::Published => "published",
            SeriesKind::Relay => "relay",
            SeriesKind::DeadLettered => "dead-lettered",
            SeriesKind::Processed => "processed",
            SeriesKind::Duplicates => "duplicates",
            SeriesKind::Rejected => "DLQ (poison)",
            SeriesKind::EndToEndP50 => "e2e p50",
            SeriesKind::EndToEndP99 => "e2e p99",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            SeriesKind::Pending | SeriesKind::DeadLettered | SeriesKind::Duplicates | SeriesKind::Rejected => {
                Unit::Count
            }
            SeriesKind::OldestPending | SeriesKind::EndToEndP50 | SeriesKind::EndToEndP99 => Unit::Seconds,
            SeriesKind::Published | SeriesKind::Processed => Unit::PerSecond,
            SeriesKind::Relay => Unit::Flag,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    Count,
    PerSecond,
    Seconds,
    /// 1 = yes, 0 = no.
    Flag,
}

/// A running stack as the dashboard sees it.
pub trait Stack: Send + Sync {
    /// Every resource, in file order; empty while the stack is still being built.
    fn resources(&self) -> Vec<Resource>;
    /// The most recent events, oldest first.
    fn events(&self, limit: usize) -> Vec<Event>;
    /// The most recent lines of `resource` (of all, interleaved, when `None`), oldest first.
    fn logs(&self, resource: Option<&str>, limit: usize) -> Vec<LogLine>;
    /// Lines of `resource` (of all when `None`) dropped because its store was full.
    fn dropped_lines(&self, resource: Option<&str>) -> u64;
    /// `None` when no resource feeds the outbox pane.
    fn outbox(&self) -> Option<Outbox>;
    /// Changes whenever anything above would read differently; the dashboard
    /// redraws only when it moves (or on input).
    fn version(&self) -> u64;
    /// Asks for `action` on `resource`; answers with what happened.
    fn act(&self, resource: &str, action: Action) -> BoxFuture<'static, Result<String, String>>;
    /// The newest traces passing `filter`, newest first (none without a receiver).
    fn traces(&self, _filter: &TraceFilter, _limit: usize) -> Vec<TraceSummary> {
        Vec::new()
    }
    /// One trace and the log records that name it.
    fn trace(&self, _id: &str) -> Option<Trace> {
        None
    }
    /// The newest structured log records passing `filter`, oldest first.
    fn records(&self, _filter: &LogFilter, _limit: usize) -> Vec<LogRecord> {
        Vec::new()
    }
    /// What the receiver took and let go; `None` without one.
    fn telemetry(&self) -> Option<Stats> {
        None
    }
}

/// Everything the dashboard reads at once: what the control API serves so
/// that a dashboard in another process (`apphost dashboard`) sees the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u64,
    pub resources: Vec<Resource>,
    pub events: Vec<Event>,
    /// The lines of the source asked for.
    pub logs: Vec<LogLine>,
    pub dropped_lines: u64,
    pub outbox: Option<Outbox>,
}

impl Snapshot {
    /// Reads `stack` (logs of `source`, all when `None`, at most `limit`).
    pub fn of(stack: &dyn Stack, source: Option<&str>, limit: usize, events: usize) -> Self {
        Self {
            version: stack.version(),
            resources: stack.resources(),
            events: stack.events(events),
            logs: stack.logs(source, limit),
            dropped_lines: stack.dropped_lines(source),
            outbox: stack.outbox(),
        }
    }
}
