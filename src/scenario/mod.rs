//! `apphost test`: reliability scenarios against a running stack. Each drives
//! real HTTP load at the sender, breaks something, and checks the receiver's
//! store: every acknowledged item delivered (lost = 0), none taking effect
//! twice (duplicate effects = 0), and how long full delivery took after the fault.
//!
//! - [`steps`]: scenarios as data, the built-in ones among them; [`file`]
//!   reads scenario files into steps;
//! - `run`: the step interpreter, and the checks every scenario ends with;
//! - `load`: the steady HTTP load at the sender;
//! - `effects`: duplicate effects, counted on the receiver's projection;
//! - `demo`: what is particular to the demo stack (its API, its inbox
//!   table, a poison message);
//! - [`soak`], [`apphost_killed`]: the long soak and the killed-apphost scenario;
//! - [`junit`]: the reports as a JUnit suite.

use std::{sync::Arc, time::Duration};

use serde::Serialize;

use contracts::Endpoint;

use crate::supervisor::Supervisor;

mod demo;
mod effects;
pub mod file;
mod hold;
mod junit;
mod killed;
mod load;
mod run;
mod soak;
pub mod steps;

pub use junit::junit;
pub use killed::apphost_killed;
pub use soak::soak;

/// Run by `apphost test` with no `--scenario`, in this order.
pub const BUILT_IN: [&str; 11] = [
    "smoke",
    "broker-outage",
    "receiver-offline",
    "sender-crash",
    "receiver-crash",
    "receiver-crash-after-commit",
    "receiver-crash-before-commit",
    "db-restart",
    "poison",
    "redelivery",
    "apphost-killed",
];

/// What `--scenario` picked.
#[derive(Debug, Clone)]
pub enum Pick {
    BuiltIn(String),
    File(std::path::PathBuf),
    /// `soak`: steady load and a random fault every 15–30 s for `duration`.
    Soak {
        duration: Duration,
        report: std::path::PathBuf,
    },
    /// `apphost bench`: the measurements, not a scenario, on the same harness.
    Bench(Box<crate::bench::Options>),
}

/// Who plays which part, by resource name.
#[derive(Debug, Clone)]
pub struct Roles {
    pub sender: String,
    pub receiver: String,
    pub broker: String,
    pub sender_db: String,
    /// `amqp://user:password@127.0.0.1:PORT` of the broker, for the poison message.
    pub broker_url: String,
    /// The queue the receiver consumes.
    pub queue: String,
    /// `postgres://…` of the receiver's database, where its effects are counted.
    pub receiver_db_url: String,
    /// The postgres resource the receiver references (empty when none).
    pub receiver_db: String,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a fault lasts (the broker outage, the receiver's absence, the database restart).
    pub outage: Duration,
    /// Requests per second of the steady load.
    pub rate: u32,
    /// How long to wait for full delivery after the fault.
    pub settle: Duration,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub scenario: String,
    pub acknowledged: usize,
    /// Answers other than 201 (e.g. 503 while the database is down): nothing was promised.
    pub refused: usize,
    /// Of those, answered 503: the service said it could not promise now.
    pub unavailable: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicate_effects: u64,
    /// From the end of the fault to the last acknowledged item stored.
    pub recovery_seconds: Option<f64>,
    pub seconds: f64,
    pub failure: Option<String>,
    /// What happened along the way (when the fault struck, what was pending).
    pub notes: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failure.is_none() && self.lost == 0 && self.duplicate_effects == 0
    }
}

pub struct Ctx {
    pub supervisor: Arc<Supervisor>,
    pub roles: Roles,
    pub settings: Settings,
    client: reqwest::Client,
    receiver_db: Option<sqlx::PgPool>,
    /// apphost's OTLP store: where a lost item's trace is looked up.
    telemetry: Option<Arc<crate::otlp::Store>>,
}

impl Ctx {
    pub fn new(supervisor: Arc<Supervisor>, roles: Roles, settings: Settings) -> Self {
        let client = crate::loopback::client(Some(Duration::from_secs(10)));
        let receiver_db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(&roles.receiver_db_url)
            .ok();
        Self { supervisor, roles, settings, client, receiver_db, telemetry: None }
    }

    /// Looks lost and doubled items' traces up in `store`.
    pub fn with_telemetry(mut self, store: Option<Arc<crate::otlp::Store>>) -> Self {
        self.telemetry = store;
        self
    }

    /// `id (trace T)` for each of `ids`, the trace looked up by the item's id
    /// in apphost's OTLP store: what a report names a lost or doubled item by.
    pub(super) fn traced(&self, ids: &[String]) -> String {
        let named: Vec<String> = ids
            .iter()
            .take(5)
            .map(|id| match self.telemetry.as_ref().and_then(|s| s.trace_with("entity.id", id)) {
                Some(trace) => format!("{id} (trace {trace}: `apphost trace {trace}`)"),
                None => format!("{id} (its trace was not kept)"),
            })
            .collect();
        let more = if ids.len() > 5 { format!(" and {} more", ids.len() - 5) } else { String::new() };
        format!("{}{more}", named.join(", "))
    }

    pub(crate) fn url(&self, resource: &str) -> Result<String, String> {
        self.supervisor
            .snapshot()
            .into_iter()
            .find(|s| s.name == resource || s.resource == resource)
            .and_then(|s| Endpoint::http(&s.endpoints).map(str::to_owned))
            .ok_or_else(|| format!("`{resource}` has no http endpoint"))
    }

    /// The receiver's database, where its effects are counted.
    pub(crate) fn receiver_db(&self) -> Option<&sqlx::PgPool> {
        self.receiver_db.as_ref()
    }

    pub(super) async fn receiver_metric(&self, series: &str) -> f64 {
        self.metric(&self.roles.receiver, series).await
    }

    pub(crate) async fn metric(&self, resource: &str, series: &str) -> f64 {
        self.scrape(resource).await.get(series).unwrap_or(0.0)
    }

    /// `resource`'s `/metrics`, read as the dashboard's monitor reads them (empty when it does not answer).
    pub(crate) async fn scrape(&self, resource: &str) -> crate::monitor::Scrape {
        let Ok(url) = self.url(resource) else { return Default::default() };
        crate::monitor::scrape(&self.client, &[format!("{url}/metrics")]).await.unwrap_or_default()
    }
}
