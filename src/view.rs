//! The dashboard's view of a running app: [`dashboard::Stack`] over the
//! supervisor's snapshot and events, the log store and the monitor. Before
//! the app has started (while it builds) only apphost's own lines exist.

use std::sync::{Arc, OnceLock};

use futures::{FutureExt, future::BoxFuture};

use crate::{
    logs::{self, LogStore},
    monitor::Monitor,
    runtime::Exit,
    supervisor::{Control, State, Status, Supervisor},
};

pub struct LiveStack {
    logs: LogStore,
    app: OnceLock<(Arc<Supervisor>, Arc<Monitor>)>,
}

impl LiveStack {
    pub fn new(logs: LogStore) -> Arc<Self> {
        Arc::new(Self { logs, app: OnceLock::new() })
    }

    /// The app has started: from now on there is something to show and to control.
    pub fn started(&self, supervisor: Arc<Supervisor>, monitor: Arc<Monitor>) {
        let _ = self.app.set((supervisor, monitor));
    }
}

/// What the dashboard shows of a status.
pub fn resource(status: &Status, usage: Option<(Option<f64>, u64)>) -> dashboard::Resource {
    use dashboard::{Health, Phase};
    let (phase, state, health) = match &status.state {
        State::Pending => (Phase::Waiting, "waiting".to_owned(), Health::Unknown),
        State::Starting => (Phase::Starting, "starting".to_owned(), Health::Unknown),
        State::Running => (Phase::Up, "running".to_owned(), Health::Unknown),
        State::Healthy => (Phase::Up, "running".to_owned(), Health::Healthy),
        State::Unhealthy => (Phase::Up, "running".to_owned(), Health::Unhealthy),
        State::Stopping => (Phase::Stopping, "stopping".to_owned(), Health::Unknown),
        State::Stopped => (Phase::Stopped, "stopped".to_owned(), Health::Unknown),
        State::Exited(Exit::Code(0)) => (Phase::Stopped, "exited (0)".to_owned(), Health::Unknown),
        State::Exited(Exit::Code(code)) => (Phase::Failed, format!("exited ({code})"), Health::Unknown),
        State::Exited(Exit::Signal(signal)) => (Phase::Failed, format!("killed ({signal})"), Health::Unknown),
        State::Exited(Exit::Unknown) => (Phase::Failed, "gone".to_owned(), Health::Unknown),
        State::Failed(_) => (Phase::Failed, "failed".to_owned(), Health::Unknown),
    };
    let up = status.state.is_up();
    dashboard::Resource {
        name: status.name.clone(),
        kind: status.kind.clone(),
        runtime: status.runtime.clone(),
        phase,
        state,
        health,
        endpoints: status.endpoints.clone(),
        restarts: status.restarts,
        up_since: status.started_at.filter(|_| up),
        cpu_percent: usage.and_then(|u| u.0).filter(|_| up),
        memory_bytes: usage.map(|u| u.1).filter(|_| up),
    }
}

impl dashboard::Stack for LiveStack {
    fn resources(&self) -> Vec<dashboard::Resource> {
        let Some((supervisor, monitor)) = self.app.get() else { return Vec::new() };
        supervisor.snapshot().iter().map(|s| resource(s, monitor.usage(&s.name))).collect()
    }

    fn events(&self, limit: usize) -> Vec<dashboard::Event> {
        let Some((supervisor, _)) = self.app.get() else { return Vec::new() };
        let history = supervisor.history();
        history[history.len().saturating_sub(limit)..]
            .iter()
            .map(|e| dashboard::Event { at: e.at, resource: e.resource.clone(), message: e.message.clone() })
            .collect()
    }

    fn logs(&self, resource: Option<&str>, limit: usize) -> Vec<dashboard::LogLine> {
        self.logs
            .tail(resource, limit)
            .into_iter()
            .map(|l| dashboard::LogLine {
                seq: l.seq,
                at: l.at,
                resource: l.resource,
                stream: match l.stream {
                    logs::Stream::Stdout => dashboard::Stream::Stdout,
                    logs::Stream::Stderr => dashboard::Stream::Stderr,
                    logs::Stream::System => dashboard::Stream::System,
                },
                text: l.text,
            })
            .collect()
    }

    fn dropped_lines(&self, resource: Option<&str>) -> u64 {
        self.logs.evicted(resource)
    }

    fn outbox(&self) -> Option<dashboard::Outbox> {
        self.app.get().and_then(|(_, monitor)| monitor.outbox())
    }

    fn version(&self) -> u64 {
        let app = self.app.get().map_or(0, |(s, m)| 1 + s.version() + m.version());
        app + self.logs.next_seq()
    }

    fn command(&self, resource: &str, command: dashboard::Command) -> BoxFuture<'static, Result<String, String>> {
        let Some((supervisor, _)) = self.app.get().cloned() else {
            return async { Err("the stack has not started yet".to_owned()) }.boxed();
        };
        let resource = resource.to_owned();
        async move {
            let control = match command {
                dashboard::Command::Start => Control::Start,
                dashboard::Command::Stop => Control::Stop,
                dashboard::Command::Restart => Control::Restart,
            };
            supervisor.record(&resource, format!("{} requested (dashboard)", command.verb()));
            let answer = supervisor.control(&resource, control).await;
            match &answer {
                Ok(message) => supervisor.record(&resource, message.clone()),
                Err(error) => supervisor.record(&resource, format!("{} refused: {error}", command.verb())),
            }
            answer
        }
        .boxed()
    }
}
