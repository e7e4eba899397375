//! Outbox: the pipeline's numbers from the services' `/metrics`, each with
//! its current value and a sparkline over the last minutes, so a broker
//! outage shows as a rising backlog and its drain afterwards.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Style},
    text::{Line, Span},
    widgets::Paragraph,
};

use super::{dim, frame};

use crate::{
    app::{App, Focus},
    view::{Outbox, Series, SeriesKind, Unit},
};

const LABEL: usize = 14;
const VALUE: usize = 11;

fn columns(width: u16) -> usize {
    match width {
        0..60 => 1,
        60..120 => 2,
        _ => 3,
    }
}

/// Rows the pane needs at `width`, frame included.
pub fn height(outbox: &Outbox, width: u16) -> u16 {
    (outbox.series.len().div_ceil(columns(width)).max(1) + 2) as u16
}

pub fn value(series: &Series) -> String {
    let Some(v) = series.last() else { return "-".into() };
    match series.kind.unit() {
        Unit::Count => format!("{v:.0}"),
        Unit::PerSecond => format!("{v:.1}/s"),
        Unit::Seconds if v < 1.0 => format!("{:.0}ms", v * 1000.0),
        Unit::Seconds => format!("{v:.1}s"),
        Unit::Flag if v >= 0.5 => "connected".into(),
        Unit::Flag => "backing off".into(),
    }
}

/// One character per point, the newest `width` points, scaled to the largest;
/// a blank where the value was unknown.
pub fn sparkline(points: &[Option<f64>], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let shown = &points[points.len().saturating_sub(width)..];
    let max = shown.iter().flatten().fold(0.0_f64, |m, v| m.max(*v));
    let bars: String = shown
        .iter()
        .map(|p| match p {
            None => ' ',
            Some(v) if max <= 0.0 || *v <= 0.0 => BARS[0],
            Some(v) => BARS[(((v / max) * 7.0).round() as usize).clamp(1, 7)],
        })
        .collect();
    format!("{bars:>width$}")
}

fn tone(series: &Series) -> Style {
    let v = series.last().unwrap_or(0.0);
    match series.kind {
        SeriesKind::Relay if v < 0.5 => Style::new().fg(Color::Red),
        SeriesKind::Relay => Style::new().fg(Color::Green),
        SeriesKind::DeadLettered | SeriesKind::Rejected if v > 0.0 => Style::new().fg(Color::Red),
        SeriesKind::Pending | SeriesKind::OldestPending if v > 0.0 => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    }
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let Some(outbox) = &app.outbox else { return };
    let seconds = outbox.interval_seconds * outbox.series.first().map_or(0, |s| s.points.len()) as f64;
    let title = Line::from(vec![Span::raw(" Outbox "), dim(format!("last {} ", super::duration(seconds as i64)))]);
    let block = frame(title, app.focus == Focus::Outbox);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if outbox.series.is_empty() {
        f.render_widget(Paragraph::new(dim("no numbers yet")), inner);
        return;
    }
    let cols = columns(area.width);
    let per_column = outbox.series.len().div_ceil(cols);
    let areas = Layout::horizontal(vec![Constraint::Fill(1); cols]).spacing(1).split(inner);
    for (c, column) in outbox.series.chunks(per_column).enumerate() {
        let width = areas[c].width as usize;
        let spark = width.saturating_sub(LABEL + VALUE + 1);
        let lines: Vec<Line> = column
            .iter()
            .map(|s| {
                Line::from(vec![
                    Span::raw(format!("{:<LABEL$}", s.kind.label())),
                    Span::styled(format!("{:>VALUE$} ", value(s)), tone(s)),
                    Span::styled(sparkline(&s.points, spark), Style::new().fg(Color::Cyan)),
                ])
            })
            .collect();
        f.render_widget(Paragraph::new(lines), areas[c]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_largest_and_show_gaps() {
        assert_eq!(sparkline(&[Some(0.0), Some(1.0), Some(2.0), None, Some(4.0)], 5), "▁▃▅ █");
        assert_eq!(sparkline(&[Some(1.0), Some(1.0)], 4), "  ██");
        assert_eq!(sparkline(&[Some(0.0); 3], 3), "▁▁▁");
    }
}
