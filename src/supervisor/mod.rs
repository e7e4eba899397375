//! Lifecycle: one task ([`job`]) per instance owns its state and is driven by
//! [`Action`]s; [`health`] probes send it their results. Everyone else reads
//! [`Status`] snapshots and [`Event`]s through [`Supervisor`], the narrow
//! view the CLI, the control API and the dashboard share.

pub mod chain;
pub(crate) mod health;
mod job;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use contracts::{Action, Endpoint};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinSet,
};

use crate::{
    logs::LogStore,
    plan::Instance,
    runtime::{Exit, Output, Running, Runtime, Usage},
    topology::Topology,
};

/// Where an instance is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "detail", rename_all = "lowercase")]
pub enum State {
    /// Waiting for what it depends on.
    Pending,
    Starting,
    /// Started; not (yet) known healthy.
    Running,
    Healthy,
    Unhealthy,
    Stopping,
    /// Stopped on request.
    Stopped,
    Exited(Exit),
    Failed(String),
    /// Waiting for something that failed for good: the root cause.
    Blocked(String),
}

impl State {
    pub fn label(&self) -> String {
        match self {
            State::Pending => "pending".into(),
            State::Starting => "starting".into(),
            State::Running => "running".into(),
            State::Healthy => "healthy".into(),
            State::Unhealthy => "unhealthy".into(),
            State::Stopping => "stopping".into(),
            State::Stopped => "stopped".into(),
            State::Exited(exit) => format!("exited ({exit})"),
            State::Failed(reason) => format!("failed: {reason}"),
            State::Blocked(cause) => format!("blocked: {cause}"),
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self, State::Running | State::Healthy | State::Unhealthy)
    }
}

/// What `ps`, the control API and the dashboard show of an instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub resource: String,
    pub kind: String,
    pub runtime: String,
    #[serde(flatten)]
    pub state: State,
    pub endpoints: Vec<Endpoint>,
    pub restarts: u32,
    pub started_at: Option<DateTime<Utc>>,
    /// A pid or container id while it runs.
    pub id: Option<String>,
}

/// Events kept (the oldest go first).
const HISTORY: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub resource: String,
    pub message: String,
}

/// What a job is asked; each request is answered with what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Act(Action),
    /// Stop for good: the app is going down.
    Shutdown,
}

type Reply = oneshot::Sender<Result<String, String>>;

/// State shared by the jobs and the readers.
pub(crate) struct Shared {
    order: Vec<String>,
    statuses: RwLock<HashMap<String, Status>>,
    /// Bumped on every status change; jobs waiting on dependencies watch it.
    version: watch::Sender<u64>,
    history: Mutex<VecDeque<Event>>,
    /// Events recorded so far (the history keeps only the recent ones).
    recorded: std::sync::atomic::AtomicU64,
    running: Mutex<HashMap<String, Arc<dyn Running>>>,
}

impl Shared {
    fn update(&self, name: &str, f: impl FnOnce(&mut Status)) {
        let mut statuses = self.statuses.write().expect("status lock");
        if let Some(status) = statuses.get_mut(name) {
            f(status);
        }
        drop(statuses);
        self.version.send_modify(|v| *v += 1);
    }

    fn status(&self, name: &str) -> Option<Status> {
        self.statuses.read().expect("status lock").get(name).cloned()
    }

    pub(crate) fn event(&self, resource: &str, message: impl Into<String>) {
        let event = Event { at: Utc::now(), resource: resource.to_owned(), message: message.into() };
        let mut history = self.history.lock().expect("event lock");
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        drop(history);
        self.recorded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub struct Supervisor {
    shared: Arc<Shared>,
    controls: HashMap<String, mpsc::Sender<(Request, Reply)>>,
    /// Instance names in start waves (see `topology::graph::waves`).
    waves: Vec<Vec<String>>,
    jobs: Mutex<JoinSet<()>>,
    logs: LogStore,
}

impl Supervisor {
    /// Starts a job per instance; each waits for its dependencies, then starts.
    pub fn start(
        topology: &Topology,
        instances: Vec<Instance>,
        runtimes: &HashMap<&'static str, Arc<dyn Runtime>>,
        logs: LogStore,
        secrets: Arc<Vec<String>>,
    ) -> Self {
        let (version, _) = watch::channel(0);
        let statuses = instances
            .iter()
            .map(|i| {
                let status = Status {
                    name: i.name.clone(),
                    resource: i.resource.name.clone(),
                    kind: i.resource.kind.as_str().into(),
                    runtime: i.runtime.as_str().into(),
                    state: State::Pending,
                    endpoints: i.endpoints(),
                    restarts: 0,
                    started_at: None,
                    id: None,
                };
                (i.name.clone(), status)
            })
            .collect();
        let shared = Arc::new(Shared {
            order: instances.iter().map(|i| i.name.clone()).collect(),
            statuses: RwLock::new(statuses),
            version,
            // Its full size from the start: a history filling up is not apphost's memory growing.
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            recorded: Default::default(),
            running: Mutex::default(),
        });
        // Instances of a resource, for dependency checks.
        let mut by_resource: HashMap<String, Vec<String>> = HashMap::new();
        for i in &instances {
            by_resource.entry(i.resource.name.clone()).or_default().push(i.name.clone());
        }
        let waves = crate::topology::graph::waves(topology)
            .into_iter()
            .map(|wave| wave.iter().flat_map(|r| by_resource.get(r).cloned().unwrap_or_default()).collect())
            .collect();
        let mut controls = HashMap::new();
        let mut jobs = JoinSet::new();
        for instance in instances {
            let (tx, rx) = mpsc::channel(16);
            controls.insert(instance.name.clone(), tx);
            let deps = instance
                .resource
                .wait_for
                .iter()
                .map(|w| (by_resource.get(&w.name).cloned().unwrap_or_default(), w.name.clone(), w.condition))
                .collect();
            let runtime = runtimes[instance.runtime.as_str()].clone();
            let out = Output { store: logs.clone(), resource: instance.name.as_str().into(), secrets: secrets.clone() };
            let job =
                job::Job { instance, runtime, shared: shared.clone(), out, control: rx, deps, logs: logs.clone() };
            jobs.spawn(job.run());
        }
        Self { shared, controls, waves, jobs: Mutex::new(jobs), logs }
    }

    /// Every instance's status, in file order.
    pub fn snapshot(&self) -> Vec<Status> {
        let statuses = self.shared.statuses.read().expect("status lock");
        self.shared.order.iter().filter_map(|n| statuses.get(n).cloned()).collect()
    }

    pub fn history(&self) -> Vec<Event> {
        self.shared.history.lock().expect("event lock").iter().cloned().collect()
    }

    pub fn record(&self, resource: &str, message: impl Into<String>) {
        self.shared.event(resource, message);
    }

    pub fn logs(&self) -> &LogStore {
        &self.logs
    }

    /// Changes with every status change and every event: what a reader
    /// compares to know whether to read again.
    pub fn version(&self) -> u64 {
        *self.shared.version.borrow() + self.shared.recorded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resolves on every status change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    /// Instance names of `name`: the instance itself, or every replica of a resource.
    pub fn resolve(&self, name: &str) -> Vec<String> {
        let statuses = self.shared.statuses.read().expect("status lock");
        if statuses.contains_key(name) {
            return vec![name.to_owned()];
        }
        self.shared.order.iter().filter(|n| statuses.get(*n).is_some_and(|s| s.resource == name)).cloned().collect()
    }

    /// Asks every instance of `name` for `action` and returns their answers.
    pub async fn act(&self, name: &str, action: Action) -> Result<String, String> {
        let targets = self.resolve(name);
        if targets.is_empty() {
            return Err(format!("no resource is called `{name}`"));
        }
        let mut answers = Vec::new();
        for target in targets {
            let (tx, rx) = oneshot::channel();
            self.controls[&target]
                .send((Request::Act(action), tx))
                .await
                .map_err(|_| format!("`{target}` is shut down"))?;
            answers.push(rx.await.map_err(|_| format!("`{target}` did not answer"))??);
        }
        Ok(answers.join("; "))
    }

    /// `action` on `name` on someone's behalf, with the request and its
    /// outcome recorded as events: `asked` names it (`chaos: stop for 30s`),
    /// `prefix` marks the outcome (`chaos: `).
    pub async fn request(&self, name: &str, action: Action, asked: &str, prefix: &str) -> Result<String, String> {
        self.record(name, format!("{asked} requested"));
        let answer = self.act(name, action).await;
        match &answer {
            Ok(message) => self.record(name, format!("{prefix}{message}")),
            Err(error) => self.record(name, format!("{asked} refused: {error}")),
        }
        answer
    }

    /// Whether every instance is healthy (or finished, for one-shot jobs).
    pub fn all_healthy(&self) -> bool {
        self.snapshot().iter().all(|s| matches!(s.state, State::Healthy | State::Exited(Exit::Code(0))))
    }

    /// Stops everything in reverse dependency order, each wave in parallel,
    /// within `deadline`; what is still up then is killed.
    pub async fn shutdown(&self, deadline: Duration) {
        let graceful = async {
            for wave in self.waves.iter().rev() {
                let stops = wave.iter().map(|name| {
                    let tx = self.controls[name].clone();
                    async move {
                        let (reply, rx) = oneshot::channel();
                        if tx.send((Request::Shutdown, reply)).await.is_ok() {
                            let _ = rx.await;
                        }
                    }
                });
                futures::future::join_all(stops).await;
            }
        };
        if tokio::time::timeout(deadline, graceful).await.is_err() {
            self.kill_all().await;
        }
    }

    /// Ends every job task; call after [`Supervisor::shutdown`] or [`Supervisor::kill_all`].
    pub fn abort(&self) {
        self.jobs.lock().expect("jobs lock").abort_all();
    }

    /// CPU time and memory of every running instance, read at once.
    pub async fn usage(&self) -> HashMap<String, Usage> {
        let running: Vec<(String, Arc<dyn Running>)> =
            self.shared.running.lock().expect("running lock").iter().map(|(n, r)| (n.clone(), r.clone())).collect();
        let reads = running.iter().map(|(name, r)| async move { r.usage().await.map(|u| (name.clone(), u)) });
        futures::future::join_all(reads).await.into_iter().flatten().collect()
    }

    /// SIGKILL to everything running, at once (a second Ctrl-C).
    pub async fn kill_all(&self) {
        let running: Vec<Arc<dyn Running>> =
            self.shared.running.lock().expect("running lock").values().cloned().collect();
        futures::future::join_all(running.iter().map(|r| r.kill())).await;
    }
}

#[cfg(test)]
mod tests;
