//! Resources: name, kind, runtime, state, health, restarts, uptime, CPU and
//! memory; endpoints when the screen is wide enough (else the selected
//! resource's endpoints in the frame's bottom line).

use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Table, TableState},
};

use super::{bytes, colour_of, dim, duration, frame};
use crate::{
    app::{App, Focus},
    view::{Health, Phase, Resource},
};

/// Wide enough for the endpoints column.
const WIDE: u16 = 110;

pub fn phase_colour(phase: Phase) -> Color {
    match phase {
        Phase::Waiting => Color::DarkGray,
        Phase::Starting | Phase::Stopping => Color::Yellow,
        Phase::Up => Color::Green,
        Phase::Stopped => Color::Gray,
        Phase::Failed => Color::Red,
    }
}

fn health(resource: &Resource) -> Span<'static> {
    match (resource.phase, resource.health) {
        (Phase::Up, Health::Healthy) => Span::styled("● healthy", Style::new().fg(Color::Green)),
        (Phase::Up, Health::Unhealthy) => Span::styled("● unhealthy", Style::new().fg(Color::Red)),
        (Phase::Up, Health::Unknown) => Span::styled("○ checking", Style::new().fg(Color::Yellow)),
        _ => dim("-"),
    }
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let focused = app.focus == Focus::Resources;
    let wide = area.width >= WIDE;
    let mut block =
        frame(Line::from(vec![Span::raw(" Resources "), dim(format!("{} ", app.resources.len()))]), focused);
    if !wide
        && let Some(selected) = app.selected()
        && !selected.endpoints.is_empty()
    {
        block = block.title_bottom(
            Line::from(vec![dim(" "), Span::raw(endpoints(&selected.endpoints)), dim(" ")]).right_aligned(),
        );
    }
    if app.resources.is_empty() {
        let text =
            Paragraph::new(Line::from(dim("no resources yet: apphost is preparing the stack (see its logs below)")))
                .block(block);
        f.render_widget(text, area);
        return;
    }
    let header = Row::new(
        ["NAME", "KIND", "RUNTIME", "STATE", "HEALTH", "RST", "UPTIME", "CPU", "MEM"]
            .into_iter()
            .chain(wide.then_some("ENDPOINTS")),
    )
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = app.resources.iter().enumerate().map(|(i, r)| {
        let uptime = r.up_since.map(|t| duration((app.now - t).num_seconds())).unwrap_or_else(|| "-".into());
        let cpu = r.cpu_percent.map(|c| format!("{c:.1}%")).unwrap_or_else(|| "-".into());
        let mem = r.memory_bytes.map(bytes).unwrap_or_else(|| "-".into());
        let restarts = if r.restarts > 0 {
            Span::styled(r.restarts.to_string(), Style::new().fg(Color::Yellow))
        } else {
            dim("0")
        };
        let mut cells = vec![
            Cell::from(Span::styled(r.name.clone(), Style::new().fg(colour_of(i)))),
            Cell::from(r.kind.clone()),
            Cell::from(r.runtime.clone()),
            Cell::from(Span::styled(r.state.clone(), Style::new().fg(phase_colour(r.phase)))),
            Cell::from(health(r)),
            Cell::from(restarts),
            Cell::from(uptime),
            Cell::from(cpu),
            Cell::from(mem),
        ];
        if wide {
            cells.push(Cell::from(endpoints(&r.endpoints)));
        }
        Row::new(cells)
    });
    let name = app.resources.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4) as u16;
    let mut widths = vec![
        Constraint::Length(name),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(13),
        Constraint::Length(11),
        Constraint::Length(3),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(5),
    ];
    if wide {
        widths.push(Constraint::Fill(2));
    }
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(
            Style::new().bg(if focused { Color::DarkGray } else { Color::Reset }).add_modifier(Modifier::BOLD),
        )
        .highlight_symbol("▶")
        .highlight_spacing(ratatui::widgets::HighlightSpacing::Always)
        .column_spacing(1);
    let mut state = TableState::new().with_selected(Some(app.selected));
    f.render_stateful_widget(table, area, &mut state);
}

/// `name=url` each, two spaces apart.
pub fn endpoints(endpoints: &[crate::view::Endpoint]) -> String {
    endpoints.iter().map(ToString::to_string).collect::<Vec<_>>().join("  ")
}
