//! Structured logs: the OTLP log records the services sent, with their
//! attributes and trace ids, filterable by resource, level, attributes and
//! text; Enter on a record opens its trace.

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
    telemetry::{Level, LogRecord},
};

fn title(app: &App) -> Line<'static> {
    let r = &app.records;
    let mut spans = vec![Span::raw(" Structured logs "), dim(format!("{} ", r.list.len()))];
    if let Some(x) = &r.filter.resource {
        spans.push(Span::raw(format!("· {x} ")));
    }
    if let Some(l) = r.filter.level {
        spans.push(Span::raw(format!("· ≥{} ", l.name())));
    }
    for a in &r.filter.attributes {
        spans.push(Span::raw(format!("· {a} ")));
    }
    let text = r.filter.text.clone().unwrap_or_default();
    if r.editing {
        spans.push(Span::styled(format!("· /{text}▏ "), Style::new().fg(Color::Yellow)));
    } else if !text.is_empty() {
        spans.push(Span::raw(format!("· /{text} ")));
    }
    if r.selected.is_none() {
        spans.push(dim("· following "));
    }
    Line::from(spans)
}

fn level_style(level: Level) -> Style {
    match level {
        Level::Error => Style::new().fg(Color::Red),
        Level::Warn => Style::new().fg(Color::Yellow),
        Level::Info => Style::new().fg(Color::Green),
        _ => Style::new().fg(Color::DarkGray),
    }
}

/// One record on one line: time, level, resource, body, attributes, trace.
pub fn record_line(app: &App, r: &LogRecord, selected: bool) -> Line<'static> {
    let base = if selected { Style::new().add_modifier(Modifier::REVERSED) } else { Style::new() };
    let at = chrono::DateTime::from_timestamp_nanos(r.at_unix_nano as i64);
    let mut spans = vec![
        Span::styled(at.format("%H:%M:%S%.3f ").to_string(), base.fg(Color::DarkGray)),
        Span::styled(format!("{:<5} ", r.level.name().to_uppercase()), base.patch(level_style(r.level))),
        Span::styled(format!("{} ", r.resource), base.fg(colour_of(app.colour_index(&r.resource)))),
        Span::styled(r.body.clone(), base),
    ];
    for (k, v) in &r.attributes {
        spans.push(Span::styled(format!(" {k}="), base.fg(Color::DarkGray)));
        spans.push(Span::styled(v.clone(), base));
    }
    if let Some(t) = &r.trace_id {
        spans.push(Span::styled(format!(" ⤷{}", &t[..8.min(t.len())]), base.fg(Color::Cyan)));
    }
    Line::from(spans)
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let block = frame(title(app), true);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [list, footer] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(inner);
    let r = &app.records;
    let rows = list.height as usize;
    let bottom = r.selected.unwrap_or(r.list.len().saturating_sub(1));
    let first = (bottom + 1).saturating_sub(rows);
    let lines: Vec<Line> = if r.list.is_empty() {
        vec![Line::from(dim("no log records yet: the services send theirs over OTLP as they log"))]
    } else {
        r.list
            .iter()
            .enumerate()
            .skip(first)
            .take(rows)
            .map(|(i, rec)| record_line(app, rec, r.selected == Some(i)))
            .collect()
    };
    f.render_widget(Paragraph::new(lines), list);
    let evicted = app.telemetry.as_ref().map_or(0, |s| s.logs_evicted);
    let mut hint = vec![dim("Enter: its trace · l level · r resource · / text · Esc back")];
    if evicted > 0 {
        hint.push(Span::styled(format!(" · {evicted} records pushed out"), Style::new().fg(Color::Red)));
    }
    f.render_widget(Paragraph::new(Line::from(hint)), footer);
}
