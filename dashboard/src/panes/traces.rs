//! Traces: the recent traces the stack's services sent (root operation,
//! resources touched, duration, errors), filterable; one of them opened as a
//! waterfall across sender and receiver, with the waits in the outbox and
//! in the broker drawn as named gaps, and its log records below.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::Paragraph,
};

use super::{colour_of, dim, frame};
use crate::{
    app::App,
    telemetry::{Row, Stats, Trace, TraceSummary, nanos, waterfall},
};

fn title(app: &App) -> Line<'static> {
    let t = &app.traces;
    let mut spans = vec![Span::raw(" Traces "), dim(format!("{} ", t.list.len()))];
    if let Some(r) = &t.filter.resource {
        spans.push(Span::raw(format!("· {r} ")));
    }
    if t.filter.min_duration_nanos > 0 {
        spans.push(Span::raw(format!("· ≥{} ", nanos(t.filter.min_duration_nanos))));
    }
    if t.filter.errors {
        spans.push(Span::styled("· errors ", Style::new().fg(Color::Red)));
    }
    match (&t.filter.text, t.editing) {
        (Some(text), true) => spans.push(Span::styled(format!("· /{text}▏ "), Style::new().fg(Color::Yellow))),
        (Some(text), false) => spans.push(Span::raw(format!("· /{text} "))),
        (None, true) => spans.push(Span::styled("· /▏ ", Style::new().fg(Color::Yellow))),
        (None, false) => {}
    }
    Line::from(spans)
}

/// What the receiver let go, so that a missing trace has a reason.
pub fn stats_line(stats: Option<&Stats>) -> Line<'static> {
    let Some(s) = stats else { return Line::from(dim("no OTLP receiver in this session")) };
    let mut spans = vec![dim(format!(
        "{} spans kept · {} sampled out · {} pushed out · {}/{}",
        s.spans,
        s.spans_sampled_out,
        s.spans_evicted,
        super::bytes(s.bytes as u64),
        super::bytes(s.budget_bytes as u64)
    ))];
    if let Some(f) = &s.forward {
        let tone = if s.forward_dropped > 0 { Style::new().fg(Color::Red) } else { Style::new().fg(Color::DarkGray) };
        spans.push(Span::styled(format!(" · → {f}: {} sent, {} not", s.forwarded, s.forward_dropped), tone));
    }
    Line::from(spans)
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    if let Some(trace) = &app.traces.open {
        return draw_trace(app, trace, f, area);
    }
    let block = frame(title(app), true);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [list, footer] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(inner);
    let wide = list.width >= 100;
    let rows = list.height.saturating_sub(1) as usize;
    let mut lines = vec![Line::from(dim(if wide {
        format!("{:<12} {:>9} {:>5} {:>4}  {:<36} {}", "STARTED", "DURATION", "SPANS", "ERR", "ROOT", "RESOURCES")
    } else {
        format!("{:<8} {:>8} {:>3}  {}", "STARTED", "DURATION", "ERR", "ROOT · RESOURCES")
    }))];
    let t = &app.traces;
    let first = t.selected.saturating_sub(rows.saturating_sub(1));
    for (i, trace) in t.list.iter().enumerate().skip(first).take(rows) {
        lines.push(summary_line(app, trace, i == t.selected, wide, list.width as usize));
    }
    if t.list.is_empty() {
        lines.push(Line::from(dim(
            "no traces yet: they appear as the services export them (a POST to the sender makes one)",
        )));
    }
    f.render_widget(Paragraph::new(lines), list);
    f.render_widget(Paragraph::new(stats_line(app.telemetry.as_ref())), footer);
}

fn summary_line(app: &App, t: &TraceSummary, selected: bool, wide: bool, width: usize) -> Line<'static> {
    let started = chrono::DateTime::from_timestamp_nanos(t.start_unix_nano as i64);
    let base = if selected { Style::new().add_modifier(Modifier::REVERSED) } else { Style::new() };
    let errors = if t.errors > 0 {
        Span::styled(format!("{:>4}", t.errors), base.fg(Color::Red))
    } else {
        Span::styled(format!("{:>4}", "·"), base.fg(Color::DarkGray))
    };
    let root = format!("{}: {}", t.root_resource, t.root);
    let mut spans = if wide {
        vec![
            Span::styled(
                format!("{:<12} {:>9} {:>5}", started.format("%H:%M:%S%.3f"), nanos(t.duration_nanos), t.spans),
                base,
            ),
            errors,
            Span::styled(format!("  {:<36} ", cut(&root, 36)), base),
        ]
    } else {
        vec![
            Span::styled(format!("{:<8} {:>8}", started.format("%H:%M:%S"), nanos(t.duration_nanos)), base),
            Span::styled(if t.errors > 0 { format!("{:>4}", t.errors) } else { format!("{:>4}", "·") }, errors.style),
            Span::styled(format!("  {} ", cut(&root, width.saturating_sub(26).clamp(10, 40))), base),
        ]
    };
    for (i, r) in t.resources.iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(",", base));
        }
        spans.push(Span::styled(r.clone(), base.fg(colour_of(app.colour_index(r)))));
    }
    Line::from(spans)
}

fn draw_trace(app: &App, trace: &Trace, f: &mut Frame, area: Rect) {
    let Some(summary) = TraceSummary::of(&trace.spans) else { return };
    let title = Line::from(vec![
        Span::raw(" Trace "),
        Span::styled(summary.trace_id.clone(), Style::new().add_modifier(Modifier::BOLD)),
        dim(format!(" {} · {} spans ", nanos(summary.duration_nanos), summary.spans)),
        if summary.errors > 0 {
            Span::styled(format!("· {} errors ", summary.errors), Style::new().fg(Color::Red))
        } else {
            dim("")
        },
    ]);
    let block = frame(title, true);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let logs = (trace.logs.len() as u16).min(inner.height / 3);
    let [rows_area, logs_area] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(if logs > 0 { logs + 1 } else { 0 })]).areas(inner);
    let width = rows_area.width as usize;
    let label_width = (width * 2 / 5).clamp(16, 44);
    let bar_width = width.saturating_sub(label_width + 10).max(4);
    let start = summary.start_unix_nano;
    let whole = summary.duration_nanos.max(1) as u128;
    let rows = waterfall(&trace.spans);
    let lines: Vec<Line> = rows
        .iter()
        .skip(app.traces.scroll.min(rows.len().saturating_sub(1)))
        .take(rows_area.height as usize)
        .map(|row| {
            let from = ((row.start() - start) as u128 * bar_width as u128 / whole) as usize;
            let to = (((row.end() - start) as u128 * bar_width as u128).div_ceil(whole) as usize)
                .clamp(from + 1, bar_width.max(from + 1));
            let bar = |c: char| {
                format!(
                    "{}{}{}",
                    " ".repeat(from.min(bar_width)),
                    c.to_string().repeat(to.min(bar_width) - from.min(bar_width)),
                    " ".repeat(bar_width - to.min(bar_width))
                )
            };
            match row {
                Row::Span { span, depth } => {
                    let colour = colour_of(app.colour_index(&span.resource));
                    let tone = if span.error.is_some() { Style::new().fg(Color::Red) } else { Style::new().fg(colour) };
                    let label = cut(&format!("{}{}", "  ".repeat((*depth).min(8)), span.name), label_width);
                    Line::from(vec![
                        Span::styled(format!("{label:<label_width$}"), tone),
                        Span::raw(format!(" {:>8} ", nanos(span.duration_nanos()))),
                        Span::styled(bar('█'), tone),
                    ])
                }
                Row::Gap { name, depth, .. } => {
                    let label = cut(&format!("{}┄ {name}", "  ".repeat((*depth).min(8))), label_width);
                    Line::from(vec![
                        dim(format!("{label:<label_width$}")),
                        dim(format!(" {:>8} ", nanos(row.end() - row.start()))),
                        Span::styled(bar('┄'), Style::new().fg(Color::Yellow)),
                    ])
                }
            }
        })
        .collect();
    f.render_widget(Paragraph::new(lines), rows_area);
    if logs > 0 {
        let mut lines = vec![Line::from(dim("log records of this trace"))];
        lines.extend(trace.logs.iter().take(logs as usize).map(|r| super::records::record_line(app, r, false)));
        f.render_widget(Paragraph::new(lines), logs_area);
    }
}

pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
