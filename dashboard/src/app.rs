//! The dashboard's state: what it last read from the [`Stack`], what the
//! user selected, and what a key does ([`App::on_key`] returns an
//! [`Effect`] for the runner to carry out). Drawing reads it only.

use std::{cell::Cell, sync::Arc};

use chrono::{DateTime, Utc};
use ratatui::{
    Frame,
    crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind},
    layout::{Constraint, Layout, Position, Rect},
};

use crate::{
    panes,
    telemetry::{LogFilter, LogRecord, Stats, Trace, TraceFilter, TraceSummary},
    view::{Action, Event, LogLine, Outbox, Resource, Stack},
};

/// Traces the traces screen reads; structured records the records screen reads.
pub const TRACES_SHOWN: usize = 500;
pub const RECORDS_SHOWN: usize = 2_000;

/// What fills the screen: the stack's panes, or one of the telemetry views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Screen {
    #[default]
    Stack,
    Traces,
    Records,
}

/// The traces screen: the list, its filter, and the trace opened from it.
#[derive(Debug, Default)]
pub struct TracesView {
    pub list: Vec<TraceSummary>,
    pub selected: usize,
    pub filter: TraceFilter,
    /// The text filter is being typed (after `/`).
    pub editing: bool,
    /// The trace opened with Enter (or from a record or a log line).
    pub open: Option<Trace>,
    pub open_id: Option<String>,
    /// The first waterfall row shown.
    pub scroll: usize,
}

/// The structured-logs screen.
#[derive(Debug, Default)]
pub struct RecordsView {
    pub list: Vec<LogRecord>,
    /// Index into `list`; following the newest when `None`.
    pub selected: Option<usize>,
    pub filter: LogFilter,
    pub editing: bool,
}

/// Minimum durations `d` steps through on the traces screen.
const MIN_DURATIONS: [u64; 5] = [0, 10_000_000, 50_000_000, 100_000_000, 1_000_000_000];

/// A key while a filter's text is typed: Enter or Esc ends it (an empty text is no filter).
fn edit_text(text: &mut Option<String>, editing: &mut bool, code: KeyCode) {
    match code {
        KeyCode::Enter | KeyCode::Esc => *editing = false,
        KeyCode::Backspace => {
            if let Some(t) = text.as_mut() {
                t.pop();
            }
        }
        KeyCode::Char(c) => text.get_or_insert_default().push(c),
        _ => {}
    }
    if !*editing && text.as_ref().is_some_and(String::is_empty) {
        *text = None;
    }
}

/// A trace id (32 lowercase hex digits) in `text`, if one is there.
pub fn trace_id_in(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let is_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    let mut run = 0;
    for (i, b) in bytes.iter().enumerate() {
        run = if is_hex(*b) { run + 1 } else { 0 };
        let ends = bytes.get(i + 1).is_none_or(|n| !is_hex(*n));
        if run == 32 && ends {
            return Some(&text[i + 1 - 32..=i]);
        }
    }
    None
}

/// Lines the logs pane reads back for scrolling and search.
pub const SCROLLBACK: usize = 5_000;
pub const EVENTS_KEPT: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Resources,
    Logs,
    Outbox,
    Events,
}

impl Focus {
    fn next(self, back: bool) -> Self {
        const ORDER: [Focus; 4] = [Focus::Resources, Focus::Outbox, Focus::Events, Focus::Logs];
        let i = ORDER.iter().position(|f| *f == self).unwrap_or(0);
        ORDER[(i + if back { ORDER.len() - 1 } else { 1 }) % ORDER.len()]
    }
}

/// What the runner does after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Tear the stack down and leave.
    Quit,
    /// Do `action` to `resource`.
    Act { resource: String, action: Action },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialog {
    Help,
    /// An action that needs a yes first (stopping a broker).
    Confirm {
        resource: String,
        action: Action,
    },
    Quit,
}

/// Levels, for filtering lines: the same as the structured records'.
pub use crate::telemetry::Level;

/// The level of a line written by tracing (text or JSON), PostgreSQL or
/// Artemis (JBoss logging); `None` when it has none (a continuation line).
pub fn level_of(text: &str) -> Option<Level> {
    let head = &text[..text.floor_char_boundary(120)];
    if let Some(at) = head.find("\"level\":\"") {
        return word_level(&head[at + 9..]);
    }
    // tracing: `2026-… INFO target: …`; Artemis: `12:00:00,123 WARN  [org…]`
    for word in head.split_whitespace().take(4) {
        if let Some(level) = word_level(word).filter(|_| word.len() <= 7) {
            return Some(level);
        }
    }
    // PostgreSQL: `… [1234] LOG:  checkpoint starting`
    for (tag, level) in [
        ("ERROR:", Level::Error),
        ("FATAL:", Level::Error),
        ("PANIC:", Level::Error),
        ("WARNING:", Level::Warn),
        ("LOG:", Level::Info),
        ("DEBUG", Level::Debug),
    ] {
        if head.contains(tag) {
            return Some(level);
        }
    }
    None
}

fn word_level(word: &str) -> Option<Level> {
    let word = word.trim_start_matches(|c: char| !c.is_ascii_alphabetic());
    let upper = |p: &str| word.len() >= p.len() && word[..p.len()].eq_ignore_ascii_case(p);
    [
        ("ERROR", Level::Error),
        ("WARN", Level::Warn),
        ("INFO", Level::Info),
        ("DEBUG", Level::Debug),
        ("TRACE", Level::Trace),
    ]
    .into_iter()
    .find(|(p, _)| upper(p) && word[p.len()..].chars().next().is_none_or(|c| !c.is_ascii_alphabetic() || p == &"WARN"))
    .map(|(_, l)| l)
}

/// Follow, scroll, search and filter state of the logs pane.
#[derive(Debug, Default)]
pub struct LogView {
    /// The resource shown; all interleaved when `None`.
    pub source: Option<String>,
    /// Lines as read, oldest first.
    pub lines: Vec<LogLine>,
    /// Indices into `lines` passing the level filter.
    pub shown: Vec<usize>,
    /// When paused: the `seq` of the line at the bottom of the pane, so the
    /// view stays put while new lines arrive. Following when `None`.
    pub anchor: Option<u64>,
    pub min_level: Option<Level>,
    pub search: Search,
    pub dropped: u64,
    /// Long lines continue on the next rows instead of being cut at the edge.
    pub wrap: bool,
}

#[derive(Debug, Default)]
pub struct Search {
    /// Being typed (after `/`, before Enter).
    pub editing: bool,
    pub query: String,
    /// Positions in `shown` whose line contains the query.
    pub matches: Vec<usize>,
    /// Which of `matches` is current.
    pub current: Option<usize>,
}

impl LogView {
    pub fn following(&self) -> bool {
        self.anchor.is_none()
    }

    /// The position in `shown` drawn at the bottom of the pane.
    pub fn bottom(&self) -> Option<usize> {
        let last = self.shown.len().checked_sub(1)?;
        match self.anchor {
            None => Some(last),
            Some(seq) => Some(self.shown.iter().rposition(|&i| self.lines[i].seq <= seq).unwrap_or(0)),
        }
    }

    fn refilter(&mut self) {
        self.shown = (0..self.lines.len())
            .filter(|&i| match self.min_level {
                None => true,
                // Lines without a level (stack traces, banners) stay: hiding them hides context.
                Some(min) => level_of(&self.lines[i].text).is_none_or(|l| l >= min),
            })
            .collect();
        self.rematch();
    }

    fn rematch(&mut self) {
        let query = self.search.query.to_lowercase();
        self.search.matches = if query.is_empty() {
            Vec::new()
        } else {
            (0..self.shown.len()).filter(|&p| self.lines[self.shown[p]].text.to_lowercase().contains(&query)).collect()
        };
        if self.search.current.is_some_and(|c| c >= self.search.matches.len()) {
            self.search.current = self.search.matches.len().checked_sub(1);
        }
    }

    /// Scrolls so `position` (in `shown`) is at the bottom; pauses following.
    fn show(&mut self, position: usize) {
        self.anchor = self.shown.get(position).or(self.shown.last()).map(|&i| self.lines[i].seq);
    }

    fn pause(&mut self) {
        if let Some(bottom) = self.bottom() {
            self.show(bottom);
        }
    }

    fn scroll(&mut self, lines: isize) {
        let Some(bottom) = self.bottom() else { return };
        let last = self.shown.len() - 1;
        let target = bottom as isize + lines;
        if target >= last as isize {
            self.anchor = None;
        } else {
            self.show(target.max(0) as usize);
        }
    }

    fn jump(&mut self, forward: bool) {
        let n = self.search.matches.len();
        if n == 0 {
            return;
        }
        // A fresh search starts at the newest match; `n` goes up (older), `N` down.
        let next = match self.search.current {
            None => n - 1,
            Some(c) if forward => (c + 1) % n,
            Some(c) => (c + n - 1) % n,
        };
        self.search.current = Some(next);
        self.show(self.search.matches[next]);
    }
}

/// The areas of the last draw, for mouse hits.
#[derive(Debug, Default, Clone, Copy)]
pub struct Areas {
    pub resources: Rect,
    pub outbox: Rect,
    pub events: Rect,
    pub logs: Rect,
    pub status: Rect,
}

pub struct App {
    stack: Arc<dyn Stack>,
    pub resources: Vec<Resource>,
    pub events: Vec<Event>,
    pub outbox: Option<Outbox>,
    pub logs: LogView,
    pub selected: usize,
    pub focus: Focus,
    /// The focused pane fills the screen.
    pub zoom: bool,
    pub dialog: Option<Dialog>,
    /// The answer to the last command, shown in the status line.
    pub notice: Option<String>,
    /// The clock uptimes are measured against (fixed in tests).
    pub now: DateTime<Utc>,
    seen: Option<u64>,
    pub areas: Cell<Areas>,
    /// Attached to a stack that runs on its own: quitting leaves it running.
    pub attached: bool,
    pub screen: Screen,
    pub traces: TracesView,
    pub records: RecordsView,
    /// The OTLP receiver's counts, when it runs.
    pub telemetry: Option<Stats>,
}

impl App {
    pub fn new(stack: Arc<dyn Stack>) -> Self {
        Self {
            stack,
            resources: Vec::new(),
            events: Vec::new(),
            outbox: None,
            logs: LogView::default(),
            selected: 0,
            focus: Focus::Resources,
            zoom: false,
            dialog: None,
            notice: None,
            now: Utc::now(),
            seen: None,
            areas: Cell::default(),
            attached: false,
            screen: Screen::Stack,
            traces: TracesView::default(),
            records: RecordsView::default(),
            telemetry: None,
        }
    }

    /// Reads the stack again if it changed since the last read; says whether it did.
    pub fn refresh(&mut self) -> bool {
        let version = self.stack.version();
        if self.seen == Some(version) {
            return false;
        }
        self.seen = Some(version);
        self.resources = self.stack.resources();
        self.selected = self.selected.min(self.resources.len().saturating_sub(1));
        self.events = self.stack.events(EVENTS_KEPT);
        self.outbox = self.stack.outbox();
        self.reload_logs();
        self.reload_telemetry();
        true
    }

    /// Reads what the shown telemetry screen needs (nothing on the stack's screen: idle stays cheap).
    fn reload_telemetry(&mut self) {
        match self.screen {
            Screen::Stack => return,
            Screen::Traces => {
                self.traces.list = self.stack.traces(&self.traces.filter, TRACES_SHOWN);
                self.traces.selected = self.traces.selected.min(self.traces.list.len().saturating_sub(1));
                if let Some(id) = &self.traces.open_id {
                    self.traces.open = self.stack.trace(id);
                }
            }
            Screen::Records => {
                self.records.list = self.stack.records(&self.records.filter, RECORDS_SHOWN);
                if let Some(s) = self.records.selected {
                    self.records.selected = Some(s.min(self.records.list.len().saturating_sub(1)));
                }
            }
        }
        self.telemetry = self.stack.telemetry();
    }

    /// Shows `screen`, read afresh.
    pub fn show_screen(&mut self, screen: Screen) {
        self.screen = screen;
        self.reload_telemetry();
    }

    /// Opens the trace `id` as a waterfall.
    pub fn open_trace(&mut self, id: &str) {
        self.traces.open_id = Some(id.to_owned());
        self.traces.scroll = 0;
        self.show_screen(Screen::Traces);
        if self.traces.open.is_none() {
            // It may arrive yet (a remote stack fetches it): kept open, said meanwhile.
            self.notice = Some(format!("trace {id} is not in the store (not yet sent, sampled out or pushed out)"));
        }
    }

    /// Cycles `current` through the resources' names and back to none.
    fn next_resource(&self, current: &Option<String>) -> Option<String> {
        let names: Vec<&String> = self.resources.iter().map(|r| &r.name).collect();
        match current.as_ref().and_then(|c| names.iter().position(|n| *n == c)) {
            None => names.first().map(|n| (*n).clone()),
            Some(i) => names.get(i + 1).map(|n| (*n).clone()),
        }
    }

    fn on_traces_key(&mut self, key: KeyEvent) -> Option<Effect> {
        let t = &mut self.traces;
        if t.editing {
            edit_text(&mut t.filter.text, &mut t.editing, key.code);
            self.reload_telemetry();
            return None;
        }
        let open = t.open_id.is_some();
        match key.code {
            KeyCode::Esc | KeyCode::Backspace if open => {
                t.open = None;
                t.open_id = None;
            }
            KeyCode::Esc => self.screen = Screen::Stack,
            KeyCode::Up | KeyCode::Char('k') if open => t.scroll = t.scroll.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') if open => t.scroll += 1,
            KeyCode::Up | KeyCode::Char('k') => t.selected = t.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                t.selected = (t.selected + 1).min(t.list.len().saturating_sub(1));
            }
            KeyCode::Enter if !open => {
                if let Some(id) = t.list.get(t.selected).map(|s| s.trace_id.clone()) {
                    self.open_trace(&id);
                }
            }
            KeyCode::Char('o') if open => {
                self.records.filter = LogFilter { trace_id: t.open_id.clone(), ..LogFilter::default() };
                self.records.selected = None;
                self.show_screen(Screen::Records);
            }
            KeyCode::Char('e') => t.filter.errors = !t.filter.errors,
            KeyCode::Char('d') => {
                let i = MIN_DURATIONS.iter().position(|d| *d == t.filter.min_duration_nanos).unwrap_or(0);
                t.filter.min_duration_nanos = MIN_DURATIONS[(i + 1) % MIN_DURATIONS.len()];
            }
            KeyCode::Char('r') => self.traces.filter.resource = self.next_resource(&self.traces.filter.resource),
            KeyCode::Char('/') => t.editing = true,
            _ => return self.on_common_key(key),
        }
        self.reload_telemetry();
        None
    }

    fn on_records_key(&mut self, key: KeyEvent) -> Option<Effect> {
        let r = &mut self.records;
        if r.editing {
            edit_text(&mut r.filter.text, &mut r.editing, key.code);
            self.reload_telemetry();
            return None;
        }
        let last = r.list.len().saturating_sub(1);
        match key.code {
            KeyCode::Esc if r.filter != LogFilter::default() => r.filter = LogFilter::default(),
            KeyCode::Esc => self.screen = Screen::Stack,
            KeyCode::Up | KeyCode::Char('k') => r.selected = Some(r.selected.unwrap_or(last).saturating_sub(1)),
            KeyCode::Down | KeyCode::Char('j') => {
                r.selected = r.selected.map(|s| s + 1).filter(|s| *s <= last);
            }
            KeyCode::End | KeyCode::Char('G') => r.selected = None,
            KeyCode::Enter => {
                let id = r.list.get(r.selected.unwrap_or(last)).and_then(|x| x.trace_id.clone());
                match id {
                    Some(id) => self.open_trace(&id),
                    None => self.notice = Some("this record names no trace".into()),
                }
                return None;
            }
            KeyCode::Char('l') => {
                r.filter.level = match r.filter.level {
                    None => Some(Level::Info),
                    Some(Level::Info) => Some(Level::Warn),
                    Some(Level::Warn) => Some(Level::Error),
                    _ => None,
                }
            }
            KeyCode::Char('r') => self.records.filter.resource = self.next_resource(&self.records.filter.resource),
            KeyCode::Char('/') => r.editing = true,
            _ => return self.on_common_key(key),
        }
        self.reload_telemetry();
        None
    }

    /// Keys that mean the same on every screen.
    fn on_common_key(&mut self, key: KeyEvent) -> Option<Effect> {
        match key.code {
            KeyCode::Char('q') => self.dialog = Some(Dialog::Quit),
            KeyCode::Char('?') | KeyCode::F(1) => self.dialog = Some(Dialog::Help),
            KeyCode::Char('t') => {
                self.show_screen(if self.screen == Screen::Traces { Screen::Stack } else { Screen::Traces })
            }
            KeyCode::Char('o') => {
                self.show_screen(if self.screen == Screen::Records { Screen::Stack } else { Screen::Records })
            }
            _ => {}
        }
        None
    }

    /// `T` in the logs: the trace named in the line at the bottom (or the current match).
    fn trace_of_line(&mut self) {
        let position =
            self.logs.search.current.and_then(|c| self.logs.search.matches.get(c).copied()).or(self.logs.bottom());
        let id = position
            .and_then(|p| self.logs.lines.get(self.logs.shown[p]))
            .and_then(|l| trace_id_in(&l.text))
            .map(str::to_owned);
        match id {
            Some(id) => self.open_trace(&id),
            None => self.notice = Some("no trace id in this line (o: structured logs carry theirs)".into()),
        }
    }

    fn reload_logs(&mut self) {
        let source = self.logs.source.clone();
        self.logs.lines = self.stack.logs(source.as_deref(), SCROLLBACK);
        self.logs.dropped = self.stack.dropped_lines(source.as_deref());
        self.logs.refilter();
    }

    pub fn selected(&self) -> Option<&Resource> {
        self.resources.get(self.selected)
    }

    /// Index of `name` in file order, for its colour.
    pub fn colour_index(&self, name: &str) -> usize {
        self.resources.iter().position(|r| r.name == name).map_or(self.resources.len(), |i| i)
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Option<Effect> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return Some(Effect::Quit);
        }
        if let Some(dialog) = self.dialog.clone() {
            return self.on_dialog_key(dialog, key);
        }
        if self.logs.search.editing {
            self.on_search_key(key);
            return None;
        }
        match self.screen {
            Screen::Traces => return self.on_traces_key(key),
            Screen::Records => return self.on_records_key(key),
            Screen::Stack => {}
        }
        match key.code {
            KeyCode::Char('t') => self.show_screen(Screen::Traces),
            KeyCode::Char('o') => self.show_screen(Screen::Records),
            KeyCode::Char('T') => self.trace_of_line(),
            KeyCode::Char('q') => self.dialog = Some(Dialog::Quit),
            KeyCode::Char('?') | KeyCode::F(1) => self.dialog = Some(Dialog::Help),
            KeyCode::Tab => self.focus = self.focus.next(false),
            KeyCode::BackTab => self.focus = self.focus.next(true),
            KeyCode::Char('z') => self.zoom = !self.zoom,
            KeyCode::Up | KeyCode::Char('k') => self.up_down(-1),
            KeyCode::Down | KeyCode::Char('j') => self.up_down(1),
            KeyCode::PageUp => self.logs.scroll(-(self.page() as isize)),
            KeyCode::PageDown => self.logs.scroll(self.page() as isize),
            KeyCode::Home | KeyCode::Char('g') if self.focus == Focus::Logs => self.logs.show(0),
            KeyCode::End | KeyCode::Char('G') => self.logs.anchor = None,
            KeyCode::Char('f') | KeyCode::Char(' ') => self.toggle_follow(),
            KeyCode::Enter => self.show_logs_of_selected(),
            KeyCode::Char('a') => self.set_source(None),
            KeyCode::Char('/') => {
                self.logs.search = Search { editing: true, ..Search::default() };
            }
            KeyCode::Char('n') => self.logs.jump(false),
            KeyCode::Char('N') => self.logs.jump(true),
            KeyCode::Esc => {
                self.logs.search = Search::default();
                self.notice = None;
            }
            KeyCode::Char('l') => self.cycle_level(),
            KeyCode::Char('w') => self.logs.wrap = !self.logs.wrap,
            KeyCode::Char('s') => return self.ask(Action::Start),
            KeyCode::Char('x') => return self.ask(Action::Stop),
            KeyCode::Char('r') => return self.ask(Action::Restart),
            KeyCode::Char('b') => return self.toggle_broker(),
            _ => {}
        }
        None
    }

    fn on_dialog_key(&mut self, dialog: Dialog, key: KeyEvent) -> Option<Effect> {
        let yes = matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter);
        self.dialog = None;
        match dialog {
            Dialog::Help => None,
            Dialog::Confirm { resource, action } if yes => Some(Effect::Act { resource, action }),
            Dialog::Quit if yes || key.code == KeyCode::Char('q') => Some(Effect::Quit),
            _ => None,
        }
    }

    fn on_search_key(&mut self, key: KeyEvent) {
        let search = &mut self.logs.search;
        match key.code {
            KeyCode::Enter => {
                search.editing = false;
                self.logs.rematch();
                self.logs.search.current = None;
                self.logs.jump(false);
            }
            KeyCode::Esc => self.logs.search = Search::default(),
            KeyCode::Backspace => {
                search.query.pop();
                self.logs.rematch();
            }
            KeyCode::Char(c) => {
                search.query.push(c);
                self.logs.rematch();
            }
            _ => {}
        }
    }

    fn page(&self) -> usize {
        (self.areas.get().logs.height as usize).saturating_sub(3).max(1)
    }

    fn up_down(&mut self, by: isize) {
        match self.focus {
            Focus::Logs => self.logs.scroll(by),
            _ if !self.resources.is_empty() => {
                self.selected = (self.selected as isize + by).clamp(0, self.resources.len() as isize - 1) as usize;
            }
            _ => {}
        }
    }

    fn toggle_follow(&mut self) {
        if self.logs.following() {
            self.logs.pause();
        } else {
            self.logs.anchor = None;
        }
    }

    fn show_logs_of_selected(&mut self) {
        let name = self.selected().map(|r| r.name.clone());
        if name.is_some() && self.logs.source == name {
            self.set_source(None);
        } else {
            self.set_source(name);
        }
    }

    pub fn set_source(&mut self, source: Option<String>) {
        self.logs.source = source;
        self.logs.anchor = None;
        self.reload_logs();
    }

    fn cycle_level(&mut self) {
        self.logs.min_level = match self.logs.min_level {
            None => Some(Level::Info),
            Some(Level::Info) => Some(Level::Warn),
            Some(Level::Warn) => Some(Level::Error),
            _ => None,
        };
        self.logs.refilter();
    }

    fn ask(&mut self, action: Action) -> Option<Effect> {
        let resource = self.selected()?.clone();
        if action == Action::Stop && resource.broker {
            self.dialog = Some(Dialog::Confirm { resource: resource.name, action });
            return None;
        }
        Some(Effect::Act { resource: resource.name, action })
    }

    /// `b`: stops the broker when it runs, starts it when not; always asks first.
    fn toggle_broker(&mut self) -> Option<Effect> {
        let broker = self.resources.iter().find(|r| r.broker)?;
        let action = if broker.up_since.is_some() { Action::Stop } else { Action::Start };
        self.dialog = Some(Dialog::Confirm { resource: broker.name.clone(), action });
        None
    }

    pub fn on_mouse(&mut self, mouse: MouseEvent) {
        let at = Position::new(mouse.column, mouse.row);
        let areas = self.areas.get();
        match mouse.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                if areas.resources.contains(at) {
                    self.focus = Focus::Resources;
                    // Two rows of frame and header above the first resource.
                    let row = at.y.saturating_sub(areas.resources.y + 2) as usize;
                    if row < self.resources.len() {
                        self.selected = row;
                    }
                } else if areas.logs.contains(at) {
                    self.focus = Focus::Logs;
                } else if areas.outbox.contains(at) {
                    self.focus = Focus::Outbox;
                } else if areas.events.contains(at) {
                    self.focus = Focus::Events;
                }
            }
            MouseEventKind::ScrollUp if areas.logs.contains(at) => self.logs.scroll(-3),
            MouseEventKind::ScrollDown if areas.logs.contains(at) => self.logs.scroll(3),
            MouseEventKind::ScrollUp => self.up_down(-1),
            MouseEventKind::ScrollDown => self.up_down(1),
            _ => {}
        }
    }

    /// Where each pane goes on a screen of `area`.
    pub fn layout(&self, area: Rect) -> Areas {
        let [body, status] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(area);
        let mut areas = Areas { status, ..Areas::default() };
        if self.zoom {
            match self.focus {
                Focus::Resources => areas.resources = body,
                Focus::Logs => areas.logs = body,
                Focus::Outbox => areas.outbox = body,
                Focus::Events => areas.events = body,
            }
            return areas;
        }
        // Resources first (all of them when they fit), then the outbox's rows, then logs.
        let resources = (self.resources.len().max(1) as u16 + 3).min(body.height / 2).max(3);
        let wide = body.width >= 120;
        let middle = match &self.outbox {
            Some(outbox) => panes::outbox::height(outbox, if wide { body.width * 65 / 100 } else { body.width }),
            None => 0,
        }
        .min(body.height.saturating_sub(resources) / 2);
        let [top, mid, bottom] =
            Layout::vertical([Constraint::Length(resources), Constraint::Length(middle), Constraint::Min(3)])
                .areas(body);
        areas.resources = top;
        match (&self.outbox, wide) {
            (Some(_), true) => {
                [areas.outbox, areas.events] =
                    Layout::horizontal([Constraint::Percentage(65), Constraint::Percentage(35)]).areas(mid);
                areas.logs = bottom;
            }
            // Narrow: the outbox gets the width; events sit beside the logs.
            (Some(_), false) => {
                areas.outbox = mid;
                [areas.logs, areas.events] =
                    Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(bottom);
            }
            (None, _) => {
                [areas.logs, areas.events] =
                    Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(bottom);
            }
        }
        areas
    }

    pub fn draw(&self, frame: &mut Frame) {
        if self.screen != Screen::Stack {
            let [body, status] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(frame.area());
            self.areas.set(Areas { status, ..Areas::default() });
            match self.screen {
                Screen::Traces => panes::traces::draw(self, frame, body),
                _ => panes::records::draw(self, frame, body),
            }
            panes::help::status_line(self, frame, status);
            if let Some(Dialog::Help) = &self.dialog {
                panes::help::draw(frame);
            } else if let Some(dialog) = &self.dialog {
                panes::help::confirm(self, dialog, frame);
            }
            return;
        }
        let areas = self.layout(frame.area());
        self.areas.set(areas);
        if !areas.resources.is_empty() {
            panes::resources::draw(self, frame, areas.resources);
        }
        if !areas.outbox.is_empty() {
            panes::outbox::draw(self, frame, areas.outbox);
        }
        if !areas.events.is_empty() {
            panes::events::draw(self, frame, areas.events);
        }
        if !areas.logs.is_empty() {
            panes::logs::draw(self, frame, areas.logs);
        }
        panes::help::status_line(self, frame, areas.status);
        match &self.dialog {
            Some(Dialog::Help) => panes::help::draw(frame),
            Some(dialog) => panes::help::confirm(self, dialog, frame),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_of_the_stack_s_log_formats() {
        assert_eq!(level_of("2026-11-27T06:00:00.1Z  INFO sender::startup: listening"), Some(Level::Info));
        assert_eq!(level_of("2026-11-27T06:00:00.1Z  WARN outbox::relay: broker unreachable"), Some(Level::Warn));
        assert_eq!(level_of(r#"{"timestamp":"…","level":"ERROR","fields":{}}"#), Some(Level::Error));
        assert_eq!(level_of("2026-11-27 06:00:00.123 UTC [42] LOG:  database system is ready"), Some(Level::Info));
        assert_eq!(level_of("2026-11-27 06:00:00.123 UTC [42] FATAL:  role \"x\" does not exist"), Some(Level::Error));
        assert_eq!(
            level_of("06:00:00,123 WARN  [org.apache.activemq.artemis.core.server] AMQ222165"),
            Some(Level::Warn)
        );
        assert_eq!(
            level_of("06:00:00,123 INFO  [org.apache.activemq.artemis.core.server] AMQ221007"),
            Some(Level::Info)
        );
        assert_eq!(level_of("    at java.base/java.lang.Thread.run(Thread.java:840)"), None);
        assert_eq!(level_of("Information is power"), None);
    }
}
