//! A stack of fixed data for drawing the panes at fixed sizes.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use dashboard::{
    Action, Endpoint, Event, Health, LogLine, Outbox, Phase, Resource, Series, SeriesKind, Stack, Stream, app::App,
};
use futures::future::BoxFuture;
use ratatui::{Terminal, backend::TestBackend};

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap()
}

pub fn at(seconds: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(seconds)
}

#[derive(Default)]
pub struct Fixed {
    pub resources: Vec<Resource>,
    pub events: Vec<Event>,
    pub logs: Vec<LogLine>,
    pub dropped: u64,
    pub outbox: Option<Outbox>,
    /// Commands the dashboard sent.
    pub sent: Mutex<Vec<(String, Action)>>,
}

impl Stack for Fixed {
    fn resources(&self) -> Vec<Resource> {
        self.resources.clone()
    }
    fn events(&self, limit: usize) -> Vec<Event> {
        self.events.iter().rev().take(limit).rev().cloned().collect()
    }
    fn logs(&self, resource: Option<&str>, limit: usize) -> Vec<LogLine> {
        let mine: Vec<LogLine> =
            self.logs.iter().filter(|l| resource.is_none_or(|r| &*l.resource == r)).cloned().collect();
        mine[mine.len().saturating_sub(limit)..].to_vec()
    }
    fn dropped_lines(&self, _: Option<&str>) -> u64 {
        self.dropped
    }
    fn outbox(&self) -> Option<Outbox> {
        self.outbox.clone()
    }
    fn version(&self) -> u64 {
        0
    }
    fn act(&self, resource: &str, action: Action) -> BoxFuture<'static, Result<String, String>> {
        self.sent.lock().unwrap().push((resource.to_owned(), action));
        Box::pin(async { Ok("done".to_owned()) })
    }
}

pub fn resource(name: &str, kind: &str, runtime: &str, endpoints: &[(&str, u16)]) -> Resource {
    Resource {
        name: name.into(),
        kind: kind.into(),
        runtime: runtime.into(),
        phase: Phase::Up,
        state: "running".into(),
        health: Health::Healthy,
        endpoints: endpoints.iter().map(|(port, number)| Endpoint::loopback(port, *number)).collect(),
        broker: kind == "artemis",
        restarts: 0,
        up_since: Some(at(-312)),
        cpu_percent: Some(1.5),
        memory_bytes: Some(48 * 1024 * 1024),
    }
}

/// The demo stack, everything healthy.
pub fn demo() -> Vec<Resource> {
    vec![
        resource("sender-db", "postgres", "docker", &[("tcp", 41001)]),
        resource("receiver-db", "postgres", "docker", &[("tcp", 41002)]),
        Resource {
            memory_bytes: Some(410 * 1024 * 1024),
            cpu_percent: Some(3.2),
            ..resource("broker", "artemis", "docker", &[("amqp", 41003), ("core", 41004)])
        },
        Resource {
            memory_bytes: Some(9 * 1024 * 1024),
            cpu_percent: Some(0.4),
            ..resource("sender", "project", "process", &[("http", 41005)])
        },
        Resource {
            memory_bytes: Some(8 * 1024 * 1024),
            cpu_percent: Some(0.3),
            ..resource("receiver", "project", "process", &[("http", 41006)])
        },
    ]
}

pub fn line(seq: u64, resource: &str, stream: Stream, text: &str) -> LogLine {
    LogLine { seq, at: at(seq as i64 - 100), resource: resource.into(), stream, text: text.into() }
}

pub fn demo_logs() -> Vec<LogLine> {
    [
        ("apphost", Stream::System, "runtime: docker (engine at unix:///var/run/docker.sock)"),
        (
            "sender-db",
            Stream::Stdout,
            "2026-11-27 08:58:00.100 UTC [1] LOG:  database system is ready to accept connections",
        ),
        (
            "broker",
            Stream::Stdout,
            "08:58:03,210 INFO  [org.apache.activemq.artemis.core.server] AMQ221007: Server is now active",
        ),
        ("sender", Stream::Stdout, "2026-11-27T08:58:04.000Z  INFO sender::startup: listening on 127.0.0.1:41005"),
        ("receiver", Stream::Stdout, "2026-11-27T08:58:04.100Z  INFO receiver::consumer: attached to `entity-items`"),
        ("sender", Stream::Stderr, "2026-11-27T08:58:09.000Z  WARN outbox::relay: broker unreachable, retrying in 1s"),
        ("sender", Stream::Stdout, "2026-11-27T08:58:10.000Z  INFO outbox::relay: published 25 messages"),
        ("receiver", Stream::Stdout, "2026-11-27T08:58:10.200Z  INFO receiver::consumer: stored 25 items"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (r, s, t))| line(i as u64, r, *s, t))
    .collect()
}

/// Outbox numbers over `n` points, from functions of the point's index.
pub fn outbox(n: usize, pending: impl Fn(usize) -> f64, connected: impl Fn(usize) -> f64) -> Outbox {
    let series = |kind, f: &dyn Fn(usize) -> f64| Series { kind, points: (0..n).map(|i| Some(f(i))).collect() };
    Outbox {
        interval_seconds: 2.0,
        series: vec![
            series(SeriesKind::Pending, &pending),
            series(SeriesKind::OldestPending, &|i| pending(i) / 10.0),
            series(SeriesKind::Published, &|i| if connected(i) > 0.5 { 10.0 } else { 0.0 }),
            series(SeriesKind::Relay, &connected),
            series(SeriesKind::Processed, &|i| if connected(i) > 0.5 { 10.0 } else { 0.0 }),
            series(SeriesKind::Duplicates, &|_| 2.0),
            series(SeriesKind::Rejected, &|_| 0.0),
            series(SeriesKind::EndToEndP50, &|_| 0.012),
            series(SeriesKind::EndToEndP99, &|_| 0.085),
        ],
    }
}

pub fn app(stack: Fixed) -> (App, Arc<Fixed>) {
    let stack = Arc::new(stack);
    let mut app = App::new(stack.clone());
    app.now = t0();
    app.refresh();
    (app, stack)
}

pub fn screen(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| app.draw(f)).unwrap();
    terminal
}
