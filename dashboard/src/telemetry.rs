//! What apphost's OTLP receiver keeps of the stack's telemetry, as the
//! dashboard, the CLI and the control API see it: spans grouped into traces,
//! structured log records, and the receiver's own counts. The waterfall of a
//! trace (its rows and the named gaps between them) is laid out here, once,
//! for the dashboard's pane and `apphost trace ID` alike.

use serde::{Deserialize, Serialize};

/// One finished span. Ids are lowercase hex, as in `traceparent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a trace's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    pub name: String,
    /// The `service.name` of the process that made it: the resource.
    pub resource: String,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// The status message of a span that ended in error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<(String, String)>,
}

impl Span {
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// From OTLP's `Span.SpanKind` number (unspecified counts as internal).
    pub fn from_otlp(kind: i32) -> Self {
        match kind {
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Internal,
        }
    }
}

/// One structured log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Increases with every record the receiver keeps.
    pub seq: u64,
    pub at_unix_nano: u64,
    pub resource: String,
    pub level: Level,
    pub body: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

/// A record's severity, coarsely (OTLP's severity numbers 1–24 in fours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn from_otlp(severity_number: i32, severity_text: &str) -> Self {
        match severity_number {
            1..=4 => Level::Trace,
            5..=8 => Level::Debug,
            9..=12 => Level::Info,
            13..=16 => Level::Warn,
            17.. => Level::Error,
            _ => Self::parse(severity_text).unwrap_or(Level::Info),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" | "information" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" | "fatal" | "critical" => Level::Error,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// A trace in a list: what it started with, whom it touched, how long, how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The root span's name (the earliest span's while the root is missing).
    pub root: String,
    pub root_resource: String,
    /// Every resource with a span in it, in order of first appearance.
    pub resources: Vec<String>,
    pub start_unix_nano: u64,
    /// From its first span's start to its last span's end.
    pub duration_nanos: u64,
    pub spans: usize,
    pub errors: usize,
}

impl TraceSummary {
    pub fn of(spans: &[Span]) -> Option<Self> {
        let first = spans.iter().min_by_key(|s| s.start_unix_nano)?;
        let root = spans.iter().find(|s| s.parent_id.is_none()).unwrap_or(first);
        let mut resources: Vec<String> = Vec::new();
        let mut by_start: Vec<&Span> = spans.iter().collect();
        by_start.sort_by_key(|s| s.start_unix_nano);
        for s in by_start {
            if !resources.contains(&s.resource) {
                resources.push(s.resource.clone());
            }
        }
        let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(first.end_unix_nano);
        Some(Self {
            trace_id: first.trace_id.clone(),
            root: root.name.clone(),
            root_resource: root.resource.clone(),
            resources,
            start_unix_nano: first.start_unix_nano,
            duration_nanos: end.saturating_sub(first.start_unix_nano),
            spans: spans.len(),
            errors: spans.iter().filter(|s| s.error.is_some()).count(),
        })
    }
}

/// A whole trace: its spans and the log records that name it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub spans: Vec<Span>,
    pub logs: Vec<LogRecord>,
}

/// What the receiver took, kept and let go: so that a missing trace has a reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// `http://127.0.0.1:PORT`: where the stack sends (gRPC and HTTP/protobuf).
    pub endpoint: String,
    pub spans_received: u64,
    /// Not kept by the sampling policy (see `docs/contracts.md`).
    pub spans_sampled_out: u64,
    /// Kept, then pushed out by newer ones when the store was full.
    pub spans_evicted: u64,
    pub logs_received: u64,
    pub logs_evicted: u64,
    pub traces: usize,
    pub spans: usize,
    pub logs: usize,
    /// What the store holds, and the most it may.
    pub bytes: usize,
    pub budget_bytes: usize,
    /// Export requests that failed to decode.
    pub rejected_requests: u64,
    /// The forward target, when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<String>,
    pub forwarded: u64,
    /// Requests not forwarded: its queue was full or the target refused them.
    pub forward_dropped: u64,
}

/// Which traces a list shows (`apphost traces`, the traces pane).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceFilter {
    /// Only traces with a span of this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Only traces at least this long.
    #[serde(default)]
    pub min_duration_nanos: u64,
    /// Only traces with a span that ended in error.
    #[serde(default)]
    pub errors: bool,
    /// Only traces whose id, root or resources contain this (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl TraceFilter {
    pub fn matches(&self, t: &TraceSummary) -> bool {
        self.resource.as_ref().is_none_or(|r| t.resources.contains(r))
            && t.duration_nanos >= self.min_duration_nanos
            && (!self.errors || t.errors > 0)
            && self.text.as_ref().is_none_or(|text| {
                let text = text.to_lowercase();
                t.trace_id.contains(&text)
                    || t.root.to_lowercase().contains(&text)
                    || t.resources.iter().any(|r| r.to_lowercase().contains(&text))
            })
    }
}

/// Which log records a view shows (`apphost logs --structured`, the pane).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Only records at this level or above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// Only records with each of these attributes (`key=value`; `key` alone: present).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Only records whose body, or one of whose attributes as `key=value`,
    /// contains this (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl LogFilter {
    pub fn matches(&self, r: &LogRecord) -> bool {
        self.resource.as_ref().is_none_or(|x| &r.resource == x)
            && self.level.is_none_or(|l| r.level >= l)
            && self.trace_id.as_ref().is_none_or(|t| r.trace_id.as_ref() == Some(t))
            && self.attributes.iter().all(|want| match want.split_once('=') {
                Some((k, v)) => r.attributes.iter().any(|(ak, av)| ak == k && av == v),
                None => r.attributes.iter().any(|(ak, _)| ak == want),
            })
            && self.text.as_ref().is_none_or(|t| {
                let t = t.to_lowercase();
                r.body.to_lowercase().contains(&t)
                    || r.attributes.iter().any(|(k, v)| format!("{k}={v}").to_lowercase().contains(&t))
            })
    }
}

/// One row of a trace's waterfall: a span at its depth, or the named wait
/// before a span that began after its parent had ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Row<'a> {
    Span { span: &'a Span, depth: usize },
    Gap { name: &'static str, start_unix_nano: u64, end_unix_nano: u64, depth: usize },
}

impl Row<'_> {
    pub fn start(&self) -> u64 {
        match self {
            Row::Span { span, .. } => span.start_unix_nano,
            Row::Gap { start_unix_nano, .. } => *start_unix_nano,
        }
    }

    pub fn end(&self) -> u64 {
        match self {
            Row::Span { span, .. } => span.end_unix_nano,
            Row::Gap { end_unix_nano, .. } => *end_unix_nano,
        }
    }
}

/// What a wait between a parent span and a child that began after it ended is called.
pub fn gap_name(parent: &Span, child: &Span) -> &'static str {
    match (parent.kind, child.kind) {
        (SpanKind::Producer, SpanKind::Consumer) => "in the broker",
        (_, SpanKind::Producer) => "waiting in the outbox",
        (_, SpanKind::Consumer) => "waiting for the consumer",
        _ => "waiting",
    }
}

/// The waterfall of `spans`: each span below its parent (children by start
/// time), a gap row before a child that started after its parent ended.
/// Spans whose parent is not in the trace (not arrived, or sampled out) are
/// roots of their own.
pub fn waterfall(spans: &[Span]) -> Vec<Row<'_>> {
    let mut order: Vec<&Span> = spans.iter().collect();
    order.sort_by_key(|s| (s.start_unix_nano, s.end_unix_nano));
    let known = |id: &str| spans.iter().any(|s| s.span_id == id);
    let mut rows = Vec::with_capacity(spans.len() * 2);
    let mut seen = std::collections::HashSet::new();
    // Roots first, then whatever no root reaches (a cycle a hostile client sent).
    let roots = order.iter().filter(|s| s.parent_id.as_deref().is_none_or(|p| !known(p)));
    for start in roots.chain(order.iter()) {
        // An explicit stack: a hostile trace may nest deeper than the thread's stack.
        let mut stack = vec![(*start, 0)];
        while let Some((span, depth)) = stack.pop() {
            if !seen.insert(span.span_id.as_str()) {
                continue;
            }
            rows.push(Row::Span { span, depth });
            for child in order.iter().rev().filter(|c| c.parent_id.as_deref() == Some(span.span_id.as_str())) {
                stack.push((child, depth + 1));
            }
        }
    }
    // Insert the gaps before each child that began after its parent ended.
    let mut out = Vec::with_capacity(rows.len() * 2);
    for row in rows {
        if let Row::Span { span, depth } = row
            && let Some(parent) = span.parent_id.as_deref().and_then(|p| spans.iter().find(|s| s.span_id == p))
            && span.start_unix_nano > parent.end_unix_nano
        {
            out.push(Row::Gap {
                name: gap_name(parent, span),
                start_unix_nano: parent.end_unix_nano,
                end_unix_nano: span.start_unix_nano,
                depth,
            });
        }
        out.push(row);
    }
    out
}

/// `850µs`, `12.3ms`, `4.20s`.
pub fn nanos(n: u64) -> String {
    match n {
        0..1_000_000 => format!("{}µs", n / 1000),
        1_000_000..10_000_000 => format!("{:.2}ms", n as f64 / 1e6),
        10_000_000..1_000_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        _ => format!("{:.2}s", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn span(id: &str, parent: Option<&str>, name: &str, kind: SpanKind, start: u64, end: u64) -> Span {
        Span {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: id.into(),
            parent_id: parent.map(Into::into),
            name: name.into(),
            resource: if matches!(kind, SpanKind::Consumer) { "receiver" } else { "sender" }.into(),
            kind,
            start_unix_nano: start,
            end_unix_nano: end,
            error: None,
            attributes: vec![],
        }
    }

    #[test]
    fn the_waits_in_the_outbox_and_the_broker_are_named_gaps() {
        let spans = vec![
            span("c", Some("b"), "outbox publish", SpanKind::Producer, 9_000, 12_000),
            span("a", None, "POST /api/EntityItems", SpanKind::Server, 0, 5_000),
            span("d", Some("c"), "receiver process", SpanKind::Consumer, 15_000, 20_000),
            span("b", Some("a"), "outbox insert", SpanKind::Internal, 1_000, 4_000),
            span("e", Some("d"), "receiver commit", SpanKind::Internal, 17_000, 19_000),
        ];
        let rows: Vec<String> = waterfall(&spans)
            .iter()
            .map(|r| match r {
                Row::Span { span, depth } => format!("{depth} {}", span.name),
                Row::Gap { name, start_unix_nano, end_unix_nano, depth } => {
                    format!("{depth} gap {name} {}", end_unix_nano - start_unix_nano)
                }
            })
            .collect();
        assert_eq!(
            rows,
            [
                "0 POST /api/EntityItems",
                "1 outbox insert",
                "2 gap waiting in the outbox 5000",
                "2 outbox publish",
                "3 gap in the broker 3000",
                "3 receiver process",
                "4 receiver commit",
            ]
        );
    }

    #[test]
    fn a_span_whose_parent_is_missing_is_a_root_and_a_cycle_ends() {
        let spans = vec![
            span("d", Some("gone"), "receiver process", SpanKind::Consumer, 15, 20),
            span("x", Some("y"), "x", SpanKind::Internal, 1, 2),
            span("y", Some("x"), "y", SpanKind::Internal, 1, 2),
        ];
        let rows = waterfall(&spans);
        assert_eq!(rows.len(), 3, "every span once, the cycle cut: {rows:?}");
        assert_eq!(TraceSummary::of(&spans).unwrap().root, "x");
    }
}
