//! `apphost traces`, `apphost trace ID` and `apphost logs --structured`: what
//! the OTLP receiver of the running app holds, read through its control API;
//! with no app running, what an earlier `up --keep-telemetry` left under
//! `.apphost/telemetry/`.

use std::{io::Write, path::Path, process::ExitCode};

use dashboard::telemetry::{LogFilter, LogRecord, Row, Stats, Trace, TraceFilter, TraceSummary, nanos, waterfall};
use miette::{IntoDiagnostic, miette};

use crate::{control::Client, otlp, statedir::StateDir};

/// Where the telemetry is read from.
enum Source {
    Live(Client),
    /// Read back from the journal of an app no longer running.
    Kept(Box<otlp::Store>),
}

fn source(file: &Path) -> miette::Result<Source> {
    let state = StateDir::for_topology(file);
    if let Some(session) = crate::statedir::Session::load_live(&state) {
        return Ok(Source::Live(Client::new(&session)));
    }
    let dir = otlp::journal::dir(&state.root);
    let (spans, logs) = otlp::journal::read(&dir).map_err(|e| miette!("{e}"))?;
    if spans.is_empty() && logs.is_empty() {
        return Err(miette!(
            help = "start it with `apphost up` (add `--keep-telemetry` to keep its traces after it stops)",
            "no apphost is running the app of {}, and none kept its telemetry in {}",
            file.display(),
            dir.display()
        ));
    }
    let store = otlp::Store::new(usize::MAX / 2);
    store.restore_spans(spans);
    store.restore_logs(logs);
    Ok(Source::Kept(Box::new(store)))
}

async fn get<T: serde::de::DeserializeOwned>(client: &Client, path: &str) -> miette::Result<Option<T>> {
    let response = client.get(path).await.map_err(|e| miette!("{e}"))?;
    if response.status() == 404 {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        eprintln!("{}", body["error"].as_str().unwrap_or("not found"));
        return Ok(None);
    }
    if !response.status().is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        return Err(miette!("{}", body["error"].as_str().unwrap_or("the app refused the request")));
    }
    Ok(Some(response.json().await.into_diagnostic()?))
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

pub async fn traces(file: &Path, filter: TraceFilter, limit: usize, json: bool) -> miette::Result<ExitCode> {
    let (list, stats) = match source(file)? {
        Source::Live(client) => {
            let q = query(&[
                ("resource", filter.resource.clone()),
                ("min_duration_nanos", Some(filter.min_duration_nanos.to_string())),
                ("errors", Some(filter.errors.to_string())),
                ("text", filter.text.clone()),
                ("limit", Some(limit.to_string())),
            ]);
            let list: Vec<TraceSummary> = get(&client, &format!("/v1/traces?{q}")).await?.unwrap_or_default();
            (list, get::<Stats>(&client, "/v1/telemetry").await.ok().flatten())
        }
        Source::Kept(store) => (store.traces(&filter, limit), None),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&list).into_diagnostic()?);
        return Ok(ExitCode::SUCCESS);
    }
    let _ = writeln!(
        out,
        "{:<32}  {:<12}  {:>9}  {:>5}  {:>6}  {:<28}  RESOURCES",
        "TRACE", "STARTED", "DURATION", "SPANS", "ERRORS", "ROOT"
    );
    for t in &list {
        let _ = writeln!(
            out,
            "{:<32}  {:<12}  {:>9}  {:>5}  {:>6}  {:<28}  {}",
            t.trace_id,
            clock(t.start_unix_nano),
            nanos(t.duration_nanos),
            t.spans,
            t.errors,
            cut(&format!("{}: {}", t.root_resource, t.root), 28),
            t.resources.join(", ")
        );
    }
    if let Some(s) = stats {
        let _ = writeln!(out, "\n{}", stats_line(&s));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn trace(file: &Path, id: &str, json: bool) -> miette::Result<ExitCode> {
    let trace: Option<Trace> = match source(file)? {
        Source::Live(client) => {
            get(
                &client,
                &format!("/v1/traces/{}", url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()),
            )
            .await?
        }
        Source::Kept(store) => store.trace(id),
    };
    let Some(trace) = trace else {
        return Ok(ExitCode::FAILURE);
    };
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&trace).into_diagnostic()?);
    } else {
        let _ = write!(out, "{}", render(&trace, 100));
    }
    Ok(ExitCode::SUCCESS)
}

/// A trace's waterfall as text, `width` columns wide: each span and each
/// named wait on a row, with a bar where it lies in the whole trace, then
/// the trace's log records.
pub fn render(trace: &Trace, width: usize) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let Some(summary) = TraceSummary::of(&trace.spans) else { return s };
    let _ = writeln!(
        s,
        "trace {}  {}  {} spans, {} errors, across {}",
        summary.trace_id,
        nanos(summary.duration_nanos),
        summary.spans,
        summary.errors,
        summary.resources.join(", ")
    );
    let start = summary.start_unix_nano;
    let whole = summary.duration_nanos.max(1);
    let label_width = 44;
    let bar_width = width.saturating_sub(label_width + 22).max(10);
    for row in waterfall(&trace.spans) {
        let (label, depth, marker) = match &row {
            Row::Span { span, depth } => {
                let error = if span.error.is_some() { " ✗" } else { "" };
                (format!("{}: {}{error}", span.resource, span.name), *depth, '█')
            }
            Row::Gap { name, depth, .. } => (format!("┄ {name}"), *depth, '┄'),
        };
        let label = cut(&format!("{}{label}", "  ".repeat(depth.min(12))), label_width);
        let from = ((row.start() - start) as u128 * bar_width as u128 / whole as u128) as usize;
        let to = (((row.end() - start) as u128 * bar_width as u128).div_ceil(whole as u128) as usize).max(from + 1);
        let bar: String =
            (0..bar_width).map(|i| if i >= from && i < to.min(bar_width) { marker } else { ' ' }).collect();
        let _ = writeln!(
            s,
            "{label:<label_width$} {:>9} {:>9} │{bar}│",
            format!("+{}", nanos(row.start() - start)),
            nanos(row.end() - row.start())
        );
    }
    if let Some(error) = trace.spans.iter().find_map(|s| s.error.as_ref().map(|e| (s, e))) {
        let _ = writeln!(s, "error in {}: {}: {}", error.0.resource, error.0.name, error.1);
    }
    if !trace.logs.is_empty() {
        let _ = writeln!(s, "\nlogs:");
        for r in &trace.logs {
            let _ = writeln!(s, "{}", record_line(r));
        }
    }
    s
}

pub async fn records(file: &Path, filter: LogFilter, limit: usize, json: bool) -> miette::Result<ExitCode> {
    let list: Vec<LogRecord> = match source(file)? {
        Source::Live(client) => {
            let q = query(&[
                ("resource", filter.resource.clone()),
                ("level", filter.level.map(|l| l.name().to_owned())),
                ("attr", (!filter.attributes.is_empty()).then(|| filter.attributes.join(","))),
                ("trace_id", filter.trace_id.clone()),
                ("text", filter.text.clone()),
                ("limit", Some(limit.to_string())),
            ]);
            get(&client, &format!("/v1/records?{q}")).await?.unwrap_or_default()
        }
        Source::Kept(store) => store.logs(&filter, limit),
    };
    let mut out = std::io::stdout().lock();
    for r in &list {
        let _ = if json {
            writeln!(out, "{}", serde_json::to_string(r).into_diagnostic()?)
        } else {
            writeln!(out, "{}", record_line(r))
        };
    }
    Ok(ExitCode::SUCCESS)
}

/// `12:00:01.234 WARN  receiver  database unavailable  held=3 trace=0af7…`
pub fn record_line(r: &LogRecord) -> String {
    let attributes: Vec<String> = r.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut line =
        format!("{} {:<5} {:<12} {}", clock(r.at_unix_nano), r.level.name().to_uppercase(), r.resource, r.body);
    if !attributes.is_empty() {
        line.push_str("  ");
        line.push_str(&attributes.join(" "));
    }
    if let Some(t) = &r.trace_id {
        line.push_str(&format!("  trace={t}"));
    }
    line
}

pub fn stats_line(s: &Stats) -> String {
    let mut line = format!(
        "kept {} traces ({} spans) and {} log records in {} of {}; let go: {} spans sampled out, {} spans and {} records \
         pushed out by newer ones",
        s.traces,
        s.spans,
        s.logs,
        dashboard::panes::bytes(s.bytes as u64),
        dashboard::panes::bytes(s.budget_bytes as u64),
        s.spans_sampled_out,
        s.spans_evicted,
        s.logs_evicted
    );
    if let Some(f) = &s.forward {
        line.push_str(&format!("; forwarded {} requests to {f}, {} not", s.forwarded, s.forward_dropped));
    }
    line
}

fn clock(unix_nano: u64) -> String {
    chrono::DateTime::from_timestamp_nanos(unix_nano as i64)
        .with_timezone(&chrono::Local)
        .format("%H:%M:%S%.3f")
        .to_string()
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use dashboard::telemetry::{Span, SpanKind};

    use super::*;

    fn span(id: &str, parent: Option<&str>, resource: &str, name: &str, kind: SpanKind, start: u64, end: u64) -> Span {
        Span {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: id.into(),
            parent_id: parent.map(Into::into),
            name: name.into(),
            resource: resource.into(),
            kind,
            start_unix_nano: start,
            end_unix_nano: end,
            error: None,
            attributes: vec![],
        }
    }

    #[test]
    fn the_waterfall_as_text_names_the_waits() {
        let ms = 1_000_000;
        let trace = Trace {
            spans: vec![
                span("a", None, "sender", "POST /api/EntityItems", SpanKind::Server, 0, 4 * ms),
                span("b", Some("a"), "sender", "outbox insert", SpanKind::Internal, ms, 3 * ms),
                span("c", Some("b"), "sender", "outbox publish", SpanKind::Producer, 5 * ms, 7 * ms),
                span("d", Some("c"), "receiver", "receiver process", SpanKind::Consumer, 9 * ms, 12 * ms),
                span("e", Some("d"), "receiver", "receiver commit", SpanKind::Internal, 10 * ms, 12 * ms),
            ],
            logs: vec![],
        };
        let text = render(&trace, 100);
        insta::assert_snapshot!(text.lines().skip(1).collect::<Vec<_>>().join("\n"));
    }
}
