//! The dashboard's view of a running app. [`LiveStack`]: [`dashboard::Stack`]
//! over the supervisor's snapshot and events, the log store and the monitor
//! (before the app has started, while it builds, only apphost's own lines
//! exist); the control API serves it. [`RemoteStack`]: the same read from
//! that API, for `apphost dashboard` in another terminal.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};

use crate::{
    logs::{LogLine, LogStore},
    monitor::Monitor,
    runtime::Exit,
    supervisor::{State, Status, Supervisor},
};

pub struct LiveStack {
    logs: LogStore,
    app: OnceLock<(Arc<Supervisor>, Arc<Monitor>)>,
    /// The OTLP receiver, once it listens.
    otlp: OnceLock<Arc<crate::otlp::Receiver>>,
    /// The lines last given to the dashboard: it asks for thousands at every
    /// change, and only the new ones are read from the store (which may have
    /// to read older ones from its journal).
    scrollback: Mutex<Scrollback>,
}

#[derive(Default)]
struct Scrollback {
    /// `(source, limit)` the lines are for.
    key: Option<(Option<String>, usize)>,
    lines: VecDeque<LogLine>,
}

impl LiveStack {
    pub fn new(logs: LogStore) -> Arc<Self> {
        Arc::new(Self { logs, app: OnceLock::new(), otlp: OnceLock::new(), scrollback: Mutex::default() })
    }

    /// The OTLP receiver listens: its traces and records are shown from now on.
    pub fn receiving(&self, receiver: Arc<crate::otlp::Receiver>) {
        let _ = self.otlp.set(receiver);
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
        State::Blocked(_) => (Phase::Failed, "blocked".to_owned(), Health::Unknown),
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
        broker: crate::kinds::Kind::parse(&status.kind).is_some_and(|k| k.spec().is_broker()),
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
        let mut scroll = self.scrollback.lock().expect("view lock");
        let key = (resource.map(str::to_owned), limit);
        if scroll.key.as_ref() == Some(&key) {
            let next = scroll.lines.back().map_or(0, |l| l.seq + 1);
            scroll.lines.extend(self.logs.since(resource, next));
            let excess = scroll.lines.len().saturating_sub(limit);
            scroll.lines.drain(..excess);
        } else {
            scroll.lines = self.logs.tail(resource, limit).into();
            scroll.key = Some(key);
        }
        scroll.lines.iter().cloned().collect()
    }

    fn dropped_lines(&self, resource: Option<&str>) -> u64 {
        self.logs.evicted(resource)
    }

    fn outbox(&self) -> Option<dashboard::Outbox> {
        self.app.get().and_then(|(_, monitor)| monitor.outbox())
    }

    fn version(&self) -> u64 {
        let app = self.app.get().map_or(0, |(s, m)| 1 + s.version() + m.version());
        app + self.logs.next_seq() + self.otlp.get().map_or(0, |r| r.store.version())
    }

    fn traces(
        &self,
        filter: &dashboard::telemetry::TraceFilter,
        limit: usize,
    ) -> Vec<dashboard::telemetry::TraceSummary> {
        self.otlp.get().map(|r| r.store.traces(filter, limit)).unwrap_or_default()
    }

    fn trace(&self, id: &str) -> Option<dashboard::telemetry::Trace> {
        self.otlp.get()?.store.trace(id)
    }

    fn records(&self, filter: &dashboard::telemetry::LogFilter, limit: usize) -> Vec<dashboard::telemetry::LogRecord> {
        self.otlp.get().map(|r| r.store.logs(filter, limit)).unwrap_or_default()
    }

    fn telemetry(&self) -> Option<dashboard::telemetry::Stats> {
        self.otlp.get().map(|r| r.stats())
    }

    fn act(&self, resource: &str, action: dashboard::Action) -> BoxFuture<'static, Result<String, String>> {
        let Some((supervisor, _)) = self.app.get().cloned() else {
            return async { Err("the stack has not started yet".to_owned()) }.boxed();
        };
        let resource = resource.to_owned();
        async move { supervisor.request(&resource, action, &format!("{action} (dashboard)"), "").await }.boxed()
    }
}

/// A running session's view, polled from its control API.
pub struct RemoteStack {
    client: crate::control::Client,
    cache: Mutex<(Option<String>, dashboard::view::Snapshot)>,
    /// The source the dashboard last asked lines of.
    wanted: Mutex<Option<String>>,
    fetched: AtomicU64,
    telemetry: Mutex<RemoteTelemetry>,
}

/// What the traces and structured-logs screens last read, fetched only while
/// one of them is shown (asked for within the last 2 s), once a second.
#[derive(Default)]
struct RemoteTelemetry {
    asked: Option<std::time::Instant>,
    traces: Vec<dashboard::telemetry::TraceSummary>,
    records: Vec<dashboard::telemetry::LogRecord>,
    stats: Option<dashboard::telemetry::Stats>,
    /// The trace asked for, and what was fetched of it.
    trace: Option<(String, Option<dashboard::telemetry::Trace>)>,
}

impl RemoteTelemetry {
    fn ask(&mut self) {
        self.asked = Some(std::time::Instant::now());
    }
}

impl RemoteStack {
    /// Polls the session until `stop`; cancels `gone` when the session ends.
    pub fn connect(
        client: crate::control::Client,
        stop: tokio_util::sync::CancellationToken,
        gone: tokio_util::sync::CancellationToken,
    ) -> Arc<Self> {
        let this = Arc::new(Self {
            client,
            cache: Mutex::default(),
            wanted: Mutex::default(),
            fetched: AtomicU64::new(0),
            telemetry: Mutex::default(),
        });
        let poller = this.clone();
        tokio::spawn(async move {
            let mut failures = 0;
            let mut round = 0u64;
            loop {
                round += 1;
                if round.is_multiple_of(5) {
                    poller.fetch_telemetry().await;
                }
                let wanted = poller.wanted.lock().expect("view lock").clone();
                let (have_source, version) = {
                    let cache = poller.cache.lock().expect("view lock");
                    (cache.0.clone(), cache.1.version)
                };
                let mut path = format!("/v1/view?limit={}", dashboard::app::SCROLLBACK);
                if let Some(source) = &wanted {
                    path.push_str(&format!("&source={source}"));
                }
                if have_source == wanted && poller.fetched.load(Ordering::Relaxed) > 0 {
                    path.push_str(&format!("&since={version}"));
                }
                match poller.client.get(&path).await {
                    Ok(r) if r.status() == 204 => failures = 0,
                    Ok(r) if r.status().is_success() => {
                        if let Ok(snapshot) = r.json::<dashboard::view::Snapshot>().await {
                            *poller.cache.lock().expect("view lock") = (wanted, snapshot);
                            poller.fetched.fetch_add(1, Ordering::Relaxed);
                        }
                        failures = 0;
                    }
                    _ => {
                        failures += 1;
                        if failures >= 5 {
                            gone.cancel();
                            return;
                        }
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        });
        this
    }
}

impl RemoteStack {
    async fn fetch_telemetry(&self) {
        let (recent, trace) = {
            let t = self.telemetry.lock().expect("view lock");
            (t.asked.is_some_and(|a| a.elapsed() < Duration::from_secs(2)), t.trace.as_ref().map(|(id, _)| id.clone()))
        };
        if !recent {
            return;
        }
        async fn fetch<T: serde::de::DeserializeOwned>(client: &crate::control::Client, path: &str) -> Option<T> {
            let response = client.get(path).await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            response.json().await.ok()
        }
        let limit = dashboard::app::TRACES_SHOWN.max(dashboard::app::RECORDS_SHOWN);
        let traces = fetch(&self.client, &format!("/v1/traces?limit={limit}")).await.unwrap_or_default();
        let records = fetch(&self.client, &format!("/v1/records?limit={limit}")).await.unwrap_or_default();
        let stats = fetch(&self.client, "/v1/telemetry").await;
        let one = match &trace {
            Some(id) => fetch(&self.client, &format!("/v1/traces/{id}")).await,
            None => None,
        };
        let mut t = self.telemetry.lock().expect("view lock");
        let changed = t.traces != traces
            || t.records != records
            || t.stats != stats
            || t.trace.as_ref().map(|(_, x)| x) != trace.as_ref().map(|_| &one);
        (t.traces, t.records, t.stats) = (traces, records, stats);
        if let Some(id) = trace
            && t.trace.as_ref().is_some_and(|(wanted, _)| *wanted == id)
        {
            t.trace = Some((id, one));
        }
        if changed {
            self.fetched.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl dashboard::Stack for RemoteStack {
    fn traces(
        &self,
        filter: &dashboard::telemetry::TraceFilter,
        limit: usize,
    ) -> Vec<dashboard::telemetry::TraceSummary> {
        let mut t = self.telemetry.lock().expect("view lock");
        t.ask();
        t.traces.iter().filter(|x| filter.matches(x)).take(limit).cloned().collect()
    }

    fn trace(&self, id: &str) -> Option<dashboard::telemetry::Trace> {
        let mut t = self.telemetry.lock().expect("view lock");
        t.ask();
        match &t.trace {
            Some((wanted, found)) if wanted == id => found.clone(),
            _ => {
                t.trace = Some((id.to_owned(), None));
                None
            }
        }
    }

    fn records(&self, filter: &dashboard::telemetry::LogFilter, limit: usize) -> Vec<dashboard::telemetry::LogRecord> {
        let mut t = self.telemetry.lock().expect("view lock");
        t.ask();
        let mine: Vec<_> = t.records.iter().filter(|r| filter.matches(r)).cloned().collect();
        mine[mine.len().saturating_sub(limit)..].to_vec()
    }

    fn telemetry(&self) -> Option<dashboard::telemetry::Stats> {
        self.telemetry.lock().expect("view lock").stats.clone()
    }

    fn resources(&self) -> Vec<dashboard::Resource> {
        self.cache.lock().expect("view lock").1.resources.clone()
    }

    fn events(&self, limit: usize) -> Vec<dashboard::Event> {
        let cache = self.cache.lock().expect("view lock");
        let events = &cache.1.events;
        events[events.len().saturating_sub(limit)..].to_vec()
    }

    fn logs(&self, resource: Option<&str>, limit: usize) -> Vec<dashboard::LogLine> {
        *self.wanted.lock().expect("view lock") = resource.map(str::to_owned);
        let cache = self.cache.lock().expect("view lock");
        if cache.0.as_deref() != resource {
            return Vec::new();
        }
        let lines = &cache.1.logs;
        lines[lines.len().saturating_sub(limit)..].to_vec()
    }

    fn dropped_lines(&self, _resource: Option<&str>) -> u64 {
        self.cache.lock().expect("view lock").1.dropped_lines
    }

    fn outbox(&self) -> Option<dashboard::Outbox> {
        self.cache.lock().expect("view lock").1.outbox.clone()
    }

    fn version(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    fn act(&self, resource: &str, action: dashboard::Action) -> BoxFuture<'static, Result<String, String>> {
        let client = self.client.clone();
        let resource = resource.to_owned();
        async move { client.act(&resource, action, None, false).await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use dashboard::Stack;

    use super::*;
    use crate::logs::Stream;

    /// The dashboard's scrollback, kept up to date from new lines only,
    /// is what a fresh read of the store gives, for one resource and for all.
    #[test]
    fn the_scrollback_follows_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::journaled(1000, &dir.path().join("logs")).unwrap();
        // One view per way of asking: a view remembers only its last one.
        let asks = [(None, 50), (Some("a"), 40), (None, 600)];
        let views: Vec<_> = asks.iter().map(|_| LiveStack::new(store.clone())).collect();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut n = 0;
        for round in 0..6 {
            // More lines than memory holds between two reads, in the fourth round.
            let lines = if round == 3 { crate::logs::RECENT * 2 } else { 7 };
            for _ in 0..lines {
                store.push(if n % 3 == 0 { &b } else { &a }, Stream::Stdout, format!("line {n}"));
                n += 1;
            }
            for ((source, limit), view) in asks.into_iter().zip(&views) {
                let texts = |l: Vec<LogLine>| l.into_iter().map(|l| l.text).collect::<Vec<_>>();
                assert_eq!(texts(view.logs(source, limit)), texts(store.tail(source, limit)), "{source:?} {limit}");
            }
        }
    }
}
