//! The status line, the `?` overlay listing every key, and confirmations.

use ratatui::{
    Frame,
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, BorderType, Borders, Clear, Paragraph},
};

use super::{centered, dim};
use crate::app::{App, Dialog};

/// Every key, as the overlay lists it.
pub const KEYS: &[(&str, &str)] = &[
    ("↑ ↓  j k", "select a resource (scroll, in the logs pane)"),
    ("Tab  S-Tab", "next / previous pane"),
    ("Enter", "logs of the selected resource (again: all)"),
    ("a", "logs of all resources, interleaved"),
    ("s  x  r", "start / stop / restart the selected resource"),
    ("b", "stop or start the broker (asks first)"),
    ("f  Space", "follow / pause the logs"),
    ("PgUp PgDn", "scroll the logs a page"),
    ("g  G", "oldest / newest line"),
    ("/", "search the logs; Enter finds"),
    ("n  N", "older / newer match"),
    ("l", "level filter: all, ≥info, ≥warn, ≥error"),
    ("w", "wrap long log lines (again: cut at the edge)"),
    ("Esc", "clear the search; back from traces and records"),
    ("z", "zoom the focused pane"),
    ("t  o  T", "traces / structured logs / the trace named in a line"),
    ("mouse", "click selects, wheel scrolls"),
    ("?", "this help"),
    ("q  Ctrl-C", "quit: stops the stack (detaches when attached)"),
];

pub fn status_line(app: &App, f: &mut Frame, area: Rect) {
    let key = |k: &'static str| Span::styled(k, Style::new().fg(Color::Black).bg(Color::Gray));
    let mut spans = vec![
        key("?"),
        Span::raw(" help "),
        key("q"),
        Span::raw(" quit "),
        key("s/x/r"),
        Span::raw(" start/stop/restart "),
        key("/"),
        Span::raw(" search "),
        key("f"),
        Span::raw(" follow "),
    ];
    match app.screen {
        crate::app::Screen::Traces if app.traces.open.is_some() => {
            spans = vec![
                key("Esc"),
                Span::raw(" back "),
                key("↑↓"),
                Span::raw(" scroll "),
                key("o"),
                Span::raw(" its logs "),
            ];
        }
        crate::app::Screen::Traces => {
            spans = vec![
                key("Enter"),
                Span::raw(" open "),
                key("e"),
                Span::raw(" errors "),
                key("d"),
                Span::raw(" ≥duration "),
                key("r"),
                Span::raw(" resource "),
                key("/"),
                Span::raw(" filter "),
                key("Esc"),
                Span::raw(" back "),
            ];
        }
        crate::app::Screen::Records => {
            spans = vec![
                key("Enter"),
                Span::raw(" trace "),
                key("l"),
                Span::raw(" level "),
                key("r"),
                Span::raw(" resource "),
                key("Esc"),
                Span::raw(" back "),
            ];
        }
        crate::app::Screen::Stack => spans.extend([key("t"), Span::raw(" traces ")]),
    }
    if let Some(notice) = &app.notice {
        spans = vec![Span::styled(notice.clone(), Style::new().fg(Color::Yellow)), dim("  (? help)")];
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn dialog_block(title: &'static str) -> Block<'static> {
    Block::new()
        .borders(Borders::ALL)
        .border_type(BorderType::Double)
        .border_style(Style::new().fg(Color::Yellow))
        .title(Span::styled(title, Style::new().add_modifier(Modifier::BOLD)))
}

pub fn draw(f: &mut Frame) {
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![Span::styled(format!(" {k:<11}"), Style::new().fg(Color::Yellow)), Span::raw(*what)])
        })
        .chain([Line::from(dim(" any key closes"))])
        .collect();
    let area = centered(f.area(), 62, lines.len() as u16 + 2);
    f.render_widget(Clear, area);
    f.render_widget(Paragraph::new(lines).block(dialog_block(" keys ")), area);
}

pub fn confirm(app: &App, dialog: &Dialog, f: &mut Frame) {
    let (question, consequence) = match dialog {
        Dialog::Confirm { resource, action } => (
            format!("{} `{resource}`?", capitalised(action.as_str())),
            match action {
                crate::view::Action::Stop => "Messages wait in the outbox until it is back.",
                _ => "",
            },
        ),
        Dialog::Quit if app.attached => ("Detach?".to_owned(), "The stack keeps running; `apphost down` stops it."),
        Dialog::Quit => ("Quit and stop the stack?".to_owned(), "Everything apphost started is stopped and removed."),
        Dialog::Help => return,
    };
    let lines = vec![
        Line::from(Span::styled(question, Style::new().add_modifier(Modifier::BOLD))),
        Line::from(dim(consequence)),
        Line::from(""),
        Line::from(vec![
            Span::styled(" y ", Style::new().fg(Color::Black).bg(Color::Yellow)),
            Span::raw(" yes   "),
            Span::styled(" n ", Style::new().fg(Color::Black).bg(Color::Gray)),
            Span::raw(" no"),
        ]),
    ];
    let area = centered(f.area(), 54, 6);
    f.render_widget(Clear, area);
    f.render_widget(Paragraph::new(lines).block(dialog_block(" confirm ")), area);
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
