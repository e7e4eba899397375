//! A stack of fixed data for drawing the panes at fixed sizes.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use dashboard::telemetry::{Level, LogFilter, LogRecord, Span, SpanKind, Stats, Trace, TraceFilter, TraceSummary};
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
    pub spans: Vec<Span>,
    pub records: Vec<LogRecord>,
    pub telemetry: Option<Stats>,
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
    fn traces(&self, filter: &TraceFilter, limit: usize) -> Vec<TraceSummary> {
        let mut ids: Vec<&str> = self.spans.iter().map(|s| s.trace_id.as_str()).collect();
        ids.dedup();
        let mut out: Vec<TraceSummary> = ids
            .iter()
            .filter_map(|id| {
                let spans: Vec<Span> = self.spans.iter().filter(|s| s.trace_id == *id).cloned().collect();
                TraceSummary::of(&spans)
            })
            .filter(|t| filter.matches(t))
            .collect();
        out.sort_by_key(|t| std::cmp::Reverse(t.start_unix_nano));
        out.truncate(limit);
        out
    }
    fn trace(&self, id: &str) -> Option<Trace> {
        let spans: Vec<Span> = self.spans.iter().filter(|s| s.trace_id == id).cloned().collect();
        let logs = self.records.iter().filter(|r| r.trace_id.as_deref() == Some(id)).cloned().collect();
        (!spans.is_empty()).then_some(Trace { spans, logs })
    }
    fn records(&self, filter: &LogFilter, limit: usize) -> Vec<LogRecord> {
        let mine: Vec<LogRecord> = self.records.iter().filter(|r| filter.matches(r)).cloned().collect();
        mine[mine.len().saturating_sub(limit)..].to_vec()
    }
    fn telemetry(&self) -> Option<Stats> {
        self.telemetry.clone()
    }
}

pub const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn nanos_at(seconds: i64, ms: f64) -> u64 {
    (at(seconds).timestamp_nanos_opt().unwrap() as f64 + ms * 1e6) as u64
}

/// A span of `trace` at `second`, from `ms.0` to `ms.1` into it.
fn span(
    trace: &str,
    (id, parent): (&str, Option<&str>),
    (resource, name): (&str, &str),
    kind: SpanKind,
    ms: (f64, f64),
    second: i64,
) -> Span {
    Span {
        trace_id: trace.into(),
        span_id: id.into(),
        parent_id: parent.map(Into::into),
        name: name.into(),
        resource: resource.into(),
        kind,
        start_unix_nano: nanos_at(second, ms.0),
        end_unix_nano: nanos_at(second, ms.1),
        error: None,
        attributes: vec![],
    }
}

/// One POST's five spans (with its waits in the outbox and the broker), then
/// older traces: health of the stack as the receiver keeps it.
pub fn demo_spans() -> Vec<Span> {
    let mut spans = vec![
        span(
            TRACE,
            ("a1", Some("00f067aa0ba902b7")),
            ("sender", "POST /api/EntityItems"),
            SpanKind::Server,
            (0.0, 3.4),
            -5,
        ),
        span(TRACE, ("a2", Some("a1")), ("sender", "outbox insert"), SpanKind::Internal, (0.2, 3.2), -5),
        span(TRACE, ("a3", Some("a2")), ("sender", "outbox publish"), SpanKind::Producer, (3.9, 9.1), -5),
        span(TRACE, ("a4", Some("a3")), ("receiver", "receiver process"), SpanKind::Consumer, (13.6, 18.2), -5),
        span(TRACE, ("a5", Some("a4")), ("receiver", "receiver commit"), SpanKind::Internal, (14.9, 18.0), -5),
    ];
    for i in 0..12 {
        let id = format!("{:032x}", 0xabc0 + i);
        let second = -10 - i as i64;
        let mut root =
            span(&id, ("b1", None), ("sender", "POST /api/EntityItems"), SpanKind::Server, (0.0, 2.0), second);
        if i == 3 {
            root.error = Some("503 at capacity".into());
        }
        spans.push(root);
        spans.push(span(&id, ("b2", Some("b1")), ("sender", "outbox publish"), SpanKind::Producer, (4.0, 6.0), second));
        spans.push(span(
            &id,
            ("b3", Some("b2")),
            ("receiver", "receiver process"),
            SpanKind::Consumer,
            (8.0, 8.0 + i as f64),
            second,
        ));
    }
    spans
}

pub fn demo_records() -> Vec<LogRecord> {
    let record =
        |seq: u64, resource: &str, level: Level, body: &str, attrs: &[(&str, &str)], trace: Option<&str>| LogRecord {
            seq,
            at_unix_nano: nanos_at(seq as i64 - 60, 0.0),
            resource: resource.into(),
            level,
            body: body.into(),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            trace_id: trace.map(Into::into),
            span_id: None,
        };
    vec![
        record(1, "sender", Level::Info, "sender listening", &[("port", "41005"), ("relays", "4")], None),
        record(2, "receiver", Level::Info, "receiver attached to the broker", &[("address", "entity-items")], None),
        record(3, "sender", Level::Warn, "broker unreachable; retrying", &[("retry_in", "1s")], None),
        record(4, "sender", Level::Debug, "item stored with its outbox row", &[("id", "0193a5")], Some(TRACE)),
        record(5, "receiver", Level::Debug, "message stored", &[("message_id", "0193a5")], Some(TRACE)),
    ]
}

pub fn demo_stats() -> Stats {
    Stats {
        endpoint: "http://127.0.0.1:41007".into(),
        spans_received: 1200,
        spans_sampled_out: 140,
        spans_evicted: 0,
        logs_received: 5,
        traces: 13,
        spans: 41,
        logs: 5,
        bytes: 81_920,
        budget_bytes: 16 * 1024 * 1024,
        ..Stats::default()
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
