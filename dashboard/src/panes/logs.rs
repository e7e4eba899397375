//! Logs: one resource's output or everyone's interleaved, coloured by
//! resource, stderr marked; follow or paused, search with highlight, and a
//! level filter for structured lines.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::Paragraph,
};

use unicode_width::UnicodeWidthChar;

use super::{colour_of, dim, frame};
use crate::{
    app::{App, Focus},
    view::{LogLine, Stream},
};

fn title(app: &App) -> Line<'static> {
    let logs = &app.logs;
    let mut spans = vec![
        Span::raw(" Logs "),
        Span::styled(logs.source.clone().unwrap_or_else(|| "all".into()), Style::new().add_modifier(Modifier::BOLD)),
    ];
    if logs.following() {
        spans.push(dim(" · following"));
    } else {
        spans.push(Span::styled(" · paused (f follows)", Style::new().fg(Color::Yellow)));
    }
    if let Some(level) = logs.min_level {
        spans.push(Span::raw(format!(" · ≥{}", level.name())));
    }
    if logs.wrap {
        spans.push(dim(" · wrapped"));
    }
    if logs.dropped > 0 {
        spans.push(Span::styled(format!(" · {} dropped", logs.dropped), Style::new().fg(Color::Red)));
    }
    if !logs.search.query.is_empty() && !logs.search.editing {
        let n = logs.search.matches.len();
        let at = logs.search.current.map_or(0, |c| c + 1);
        spans.push(Span::raw(format!(" · /{} {at}/{n}", logs.search.query)));
    }
    spans.push(Span::raw(" "));
    Line::from(spans)
}

/// `text` with every occurrence of `query` (any case) highlighted.
fn highlighted(text: &str, query: &str, base: Style) -> Vec<Span<'static>> {
    if query.is_empty() {
        return vec![Span::styled(text.to_owned(), base)];
    }
    let lower = text.to_lowercase();
    let needle = query.to_lowercase();
    // Lowercasing can change byte lengths outside ASCII; highlight only when it did not.
    if lower.len() != text.len() {
        return vec![Span::styled(text.to_owned(), base)];
    }
    let mark = Style::new().fg(Color::Black).bg(Color::Yellow);
    let mut spans = Vec::new();
    let mut from = 0;
    for (at, _) in lower.match_indices(&needle) {
        if at > from {
            spans.push(Span::styled(text[from..at].to_owned(), base));
        }
        spans.push(Span::styled(text[at..at + needle.len()].to_owned(), mark));
        from = at + needle.len();
    }
    spans.push(Span::styled(text[from..].to_owned(), base));
    spans
}

/// `text` without a leading date and time (tracing's RFC 3339, PostgreSQL's
/// `2026-11-27 08:58:00.100 UTC`): the pane is narrow and the time is known.
pub fn without_timestamp(text: &str) -> &str {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let dated = b.len() > 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !dated {
        return text;
    }
    let mut rest =
        text[19..].trim_start_matches(|c: char| c.is_ascii_digit() || matches!(c, '.' | ',' | 'Z' | '+' | ':' | '-'));
    for zone in [" UTC", " GMT"] {
        rest = rest.strip_prefix(zone).unwrap_or(rest);
    }
    rest.trim_start()
}

/// `line` cut into rows of `width` columns. The rows after the first start
/// `indent` columns in (under the text, past the prefix), so the resource
/// column stays clear.
fn wrapped(line: Line<'static>, width: usize, indent: usize) -> Vec<Line<'static>> {
    let indent = if indent * 2 > width { 0 } else { indent };
    let mut rows = Vec::new();
    let mut row: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for span in line.spans {
        let mut piece = String::new();
        for c in span.content.chars() {
            let w = c.width().unwrap_or(0);
            // At least one character per row, however narrow the pane.
            if used + w > width && used > indent {
                if !piece.is_empty() {
                    row.push(Span::styled(std::mem::take(&mut piece), span.style));
                }
                rows.push(Line::from(std::mem::take(&mut row)));
                row.push(Span::raw(" ".repeat(indent)));
                used = indent;
            }
            piece.push(c);
            used += w;
        }
        if !piece.is_empty() {
            row.push(Span::styled(piece, span.style));
        }
    }
    rows.push(Line::from(row));
    rows
}

/// One log line as drawn, with the width of its prefix (marker, resource, stream).
fn line(app: &App, l: &LogLine, name_width: usize, current: bool, width: usize) -> (Line<'static>, usize) {
    let mut spans = Vec::with_capacity(6);
    if current {
        spans.push(Span::styled("▶", Style::new().fg(Color::Yellow)));
    }
    if app.logs.source.is_none() {
        let colour = colour_of(app.colour_index(&l.resource));
        spans.push(Span::styled(format!("{:<name_width$} ", l.resource), Style::new().fg(colour)));
    }
    let base = match l.stream {
        Stream::Stdout => {
            spans.push(Span::raw(" "));
            Style::new()
        }
        Stream::Stderr => {
            spans.push(Span::styled("┃", Style::new().fg(Color::Red)));
            Style::new()
        }
        Stream::System => {
            spans.push(Span::styled("●", Style::new().fg(Color::Blue)));
            Style::new().fg(Color::Gray).add_modifier(Modifier::ITALIC)
        }
    };
    spans.push(Span::raw(" "));
    let query = app.logs.search.query.as_str();
    let mut text = without_timestamp(&l.text);
    // The current match stays in sight even far into a long line (wrapped, it is).
    let prefix: usize = spans.iter().map(|s| s.width()).sum();
    if current
        && !app.logs.wrap
        && let Some(at) = text.to_lowercase().find(&query.to_lowercase())
    {
        let room = width.saturating_sub(prefix);
        if at + query.len() > room && text.is_char_boundary(at) {
            let from =
                text[..at].char_indices().rev().nth(room.saturating_sub(query.len() + 2) / 2).map_or(at, |(i, _)| i);
            spans.push(Span::styled("…", Style::new().fg(Color::Yellow)));
            text = &text[from..];
        }
    }
    spans.extend(highlighted(text, query, base));
    (Line::from(spans), prefix)
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let block = frame(title(app), app.focus == Focus::Logs);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let logs = &app.logs;
    let (body, prompt) = if logs.search.editing {
        let [body, prompt] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(inner);
        (body, Some(prompt))
    } else {
        (inner, None)
    };
    let rows = body.height as usize;
    let name_width = logs.lines.iter().map(|l| l.resource.len()).max().unwrap_or(0);
    let current = logs.search.current.map(|c| logs.search.matches[c]);
    let lines: Vec<Line> = match logs.bottom() {
        None => vec![Line::from(dim(if logs.lines.is_empty() {
            "no output yet"
        } else {
            "no line passes the level filter (l changes it)"
        }))],
        Some(bottom) => {
            let width = body.width as usize;
            let at = |p: usize| line(app, &logs.lines[logs.shown[p]], name_width, current == Some(p), width);
            if logs.wrap {
                // From the bottom up until the pane is full; the top line may show only its end.
                let mut filled: Vec<Line> = Vec::with_capacity(rows);
                for p in (0..=bottom).rev() {
                    let (line, prefix) = at(p);
                    filled.extend(wrapped(line, width, prefix).into_iter().rev());
                    if filled.len() >= rows {
                        break;
                    }
                }
                filled.truncate(rows);
                filled.reverse();
                filled
            } else {
                let top = (bottom + 1).saturating_sub(rows);
                (top..=bottom).map(|p| at(p).0).collect()
            }
        }
    };
    f.render_widget(Paragraph::new(lines), body);
    if let Some(prompt) = prompt {
        let text = Line::from(vec![
            Span::styled("/", Style::new().fg(Color::Yellow)),
            Span::raw(logs.search.query.clone()),
            Span::styled("▏", Style::new().fg(Color::Yellow)),
            dim(format!("  {} matches · Enter finds · Esc cancels", logs.search.matches.len())),
        ]);
        f.render_widget(Paragraph::new(text), prompt);
    }
}

#[cfg(test)]
mod tests {
    use super::without_timestamp;

    #[test]
    fn leading_timestamps_go_and_the_rest_stays() {
        assert_eq!(without_timestamp("2026-11-27T08:58:04.000123Z  INFO sender: up"), "INFO sender: up");
        assert_eq!(without_timestamp("2026-11-27 08:58:00.100 UTC [1] LOG:  ready"), "[1] LOG:  ready");
        assert_eq!(without_timestamp("2026-11-27T08:58:04+01:00 WARN x"), "WARN x");
        assert_eq!(without_timestamp("08:58:03,210 INFO  [org.apache]"), "08:58:03,210 INFO  [org.apache]");
        assert_eq!(without_timestamp("2026 was a year"), "2026 was a year");
    }
}
