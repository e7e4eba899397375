//! One module per pane; each turns a slice of [`crate::app::App`]'s cached
//! view into widgets, drawing from `&self` only.

pub mod events;
pub mod help;
pub mod logs;
pub mod outbox;
pub mod records;
pub mod resources;
pub mod traces;

use ratatui::{
    layout::{Constraint, Flex, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Span,
    widgets::{Block, BorderType, Borders},
};

/// Colours given to resources in file order (logs, names).
pub const PALETTE: [Color; 6] =
    [Color::Cyan, Color::Yellow, Color::Green, Color::Magenta, Color::Blue, Color::LightRed];

pub fn colour_of(index: usize) -> Color {
    PALETTE[index % PALETTE.len()]
}

/// A pane's frame; the focused one stands out.
pub fn frame(title: impl Into<ratatui::text::Line<'static>>, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::new().fg(Color::White).add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(Color::DarkGray)
    };
    Block::new()
        .borders(Borders::ALL)
        .border_type(if focused { BorderType::Thick } else { BorderType::Plain })
        .border_style(style)
        .title(title)
}

pub fn dim(text: impl Into<String>) -> Span<'static> {
    Span::styled(text.into(), Style::new().fg(Color::DarkGray))
}

/// A `width`×`height` box in the middle of `area` (clipped to it).
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))]).flex(Flex::Center).areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))]).flex(Flex::Center).areas(row);
    cell
}

/// `5s`, `3m12s`, `2h05m`, `4d03h`.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `512B`, `12.3K`, `45.6M`, `1.2G` (binary units, as `docker stats`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if value < 10.0 { format!("{value:.1}{unit}") } else { format!("{value:.0}{unit}") }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_and_sizes_read_like_docker_ps() {
        assert_eq!(super::duration(59), "59s");
        assert_eq!(super::duration(61), "1m01s");
        assert_eq!(super::duration(7260), "2h01m");
        assert_eq!(super::duration(90000), "1d01h");
        assert_eq!(super::bytes(1000), "1000B");
        assert_eq!(super::bytes(1536), "1.5K");
        assert_eq!(super::bytes(48 * 1024 * 1024), "48M");
    }
}
