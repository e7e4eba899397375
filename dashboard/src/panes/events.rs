//! Events: lifecycle changes, health flips, restarts and chaos actions,
//! newest at the bottom.

use ratatui::{
    Frame,
    layout::Rect,
    style::{Color, Style},
    text::{Line, Span},
    widgets::Paragraph,
};

use super::{colour_of, dim, frame};
use crate::app::{App, Focus};

fn tone(message: &str) -> Style {
    let m = message.to_ascii_lowercase();
    if m.starts_with("chaos") {
        Style::new().fg(Color::Magenta)
    } else if ["fail", "exited", "unhealthy", "killed", "crash"].iter().any(|w| m.contains(w)) {
        Style::new().fg(Color::Red)
    } else if m.contains("healthy") || m.contains("started") {
        Style::new().fg(Color::Green)
    } else {
        Style::new()
    }
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let block = frame(
        Line::from(vec![Span::raw(" Events "), dim(format!("{} ", app.events.len()))]),
        app.focus == Focus::Events,
    );
    let rows = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = app
        .events
        .iter()
        .rev()
        .take(rows)
        .rev()
        .map(|e| {
            Line::from(vec![
                dim(e.at.format("%H:%M:%S ").to_string()),
                Span::styled(e.resource.clone(), Style::new().fg(colour_of(app.colour_index(&e.resource)))),
                Span::raw(" "),
                Span::styled(e.message.clone(), tone(&e.message)),
            ])
        })
        .collect();
    let text = if lines.is_empty() { vec![Line::from(dim("nothing happened yet"))] } else { lines };
    f.render_widget(Paragraph::new(text).block(block), area);
}
