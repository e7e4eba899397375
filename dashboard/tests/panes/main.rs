//! Every pane drawn through ratatui's `TestBackend` at fixed sizes, in the
//! states a developer meets: an empty start, a healthy stack, a stopped
//! broker with its backlog, a failed resource, a search.

mod helpers;

use dashboard::{Action, Event, Health, Phase, Resource, Stream, app::Effect};
use helpers::*;
use ratatui::{
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    style::Color,
};

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn typed(app: &mut dashboard::app::App, text: &str) {
    for c in text.chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
}

#[test]
fn empty_start() {
    let (app, _) = app(Fixed {
        logs: vec![
            line(0, "apphost", Stream::System, "building sender, receiver with cargo"),
            line(1, "apphost", Stream::Stderr, "cargo:    Compiling sender v0.1.0"),
        ],
        ..Fixed::default()
    });
    insta::assert_snapshot!(screen(&app, 80, 24).backend());
}

#[test]
fn all_healthy() {
    let (app, _) = app(Fixed {
        resources: demo(),
        logs: demo_logs(),
        events: vec![
            Event { at: at(-300), resource: "broker".into(), message: "healthy".into() },
            Event { at: at(-290), resource: "sender".into(), message: "healthy".into() },
            Event { at: at(-289), resource: "receiver".into(), message: "healthy".into() },
        ],
        outbox: Some(outbox(60, |_| 0.0, |_| 1.0)),
        ..Fixed::default()
    });
    insta::assert_snapshot!("all_healthy_80x24", screen(&app, 80, 24).backend());
    insta::assert_snapshot!("all_healthy_140x40", screen(&app, 140, 40).backend());
}

#[test]
fn broker_stopped_with_a_growing_backlog() {
    let mut resources = demo();
    resources[2] = Resource {
        phase: Phase::Stopped,
        state: "stopped".into(),
        health: Health::Unknown,
        up_since: None,
        cpu_percent: None,
        memory_bytes: None,
        ..resources[2].clone()
    };
    let (app, _) = app(Fixed {
        resources,
        logs: demo_logs(),
        events: vec![
            Event { at: at(-40), resource: "broker".into(), message: "chaos: stop-broker for 30s".into() },
            Event { at: at(-39), resource: "broker".into(), message: "stopped".into() },
        ],
        // Flowing for 40 points, then the broker goes and the backlog grows.
        outbox: Some(outbox(
            60,
            |i| if i < 40 { 0.0 } else { (i - 39) as f64 * 20.0 },
            |i| if i < 40 { 1.0 } else { 0.0 },
        )),
        ..Fixed::default()
    });
    let terminal = screen(&app, 80, 24);
    insta::assert_snapshot!(terminal.backend());
    let text = format!("{}", terminal.backend());
    assert!(text.contains("backing off") && text.contains("400"), "the backlog and the relay state show:\n{text}");
}

#[test]
fn a_failed_resource_shows_its_exit_code_in_red() {
    let mut resources = demo();
    resources[4] = Resource {
        phase: Phase::Failed,
        state: "exited (101)".into(),
        health: Health::Unknown,
        restarts: 3,
        up_since: None,
        cpu_percent: None,
        memory_bytes: None,
        ..resources[4].clone()
    };
    let mut logs = demo_logs();
    logs.push(line(20, "receiver", Stream::Stderr, "thread 'main' panicked at services/receiver/src/main.rs:12:5:"));
    logs.push(line(21, "receiver", Stream::System, "exited with exit code 101; restarting in 4s (restart 3)"));
    let (mut app, _) = app(Fixed {
        resources,
        logs,
        events: vec![Event { at: at(-5), resource: "receiver".into(), message: "exited (exit code 101)".into() }],
        outbox: Some(outbox(60, |_| 0.0, |_| 1.0)),
        ..Fixed::default()
    });
    app.selected = 4;
    let terminal = screen(&app, 80, 24);
    insta::assert_snapshot!(terminal.backend());
    let buffer = terminal.backend().buffer();
    let row = (0..24)
        .find(|&y| (0..80).map(|x| buffer[(x, y)].symbol()).collect::<String>().contains("exited (101)"))
        .expect("the exit code is on screen");
    let x = (0..80).find(|&x| buffer[(x, row)].symbol() == "e" && buffer[(x + 1, row)].symbol() == "x").unwrap();
    assert_eq!(buffer[(x, row)].fg, Color::Red);
}

#[test]
fn a_search_highlights_its_matches_and_walks_them() {
    let mut logs = demo_logs();
    for i in 0..30 {
        logs.push(line(
            100 + i,
            "sender",
            Stream::Stdout,
            &format!("2026-11-27T08:59:{:02}.000Z  INFO sender::routes: POST /api/EntityItems 201", i),
        ));
    }
    let (mut app, _) =
        app(Fixed { resources: demo(), logs, outbox: Some(outbox(60, |_| 0.0, |_| 1.0)), ..Fixed::default() });
    app.on_key(key(KeyCode::Char('/')));
    typed(&mut app, "relay");
    insta::assert_snapshot!("search_typing", screen(&app, 80, 24).backend());
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.logs.search.matches.len(), 2);
    assert!(!app.logs.following(), "a search pauses the view on its match");
    let terminal = screen(&app, 80, 24);
    insta::assert_snapshot!("search_found", terminal.backend());
    let buffer = terminal.backend().buffer();
    let highlighted = buffer.content().iter().filter(|c| c.bg == Color::Yellow).map(|c| c.symbol()).collect::<String>();
    assert!(highlighted.contains("relay"), "matches are highlighted: {highlighted:?}");
    app.on_key(key(KeyCode::Char('n')));
    assert_eq!(app.logs.search.current, Some(0), "n walks to the older match");
    app.on_key(key(KeyCode::Char('N')));
    assert_eq!(app.logs.search.current, Some(1));
}

#[test]
fn w_wraps_long_lines_under_their_text() {
    let mut logs = demo_logs();
    let long = "2026-11-27T08:58:11.000Z ERROR receiver::consumer: message 0192a7c4 rejected to the DLQ: the body is not an EntityItemCreated event (missing field `id` at line 1 column 42); the queue keeps flowing";
    logs.push(line(50, "receiver", Stream::Stderr, long));
    let (mut app, _) = app(Fixed { resources: demo(), logs, ..Fixed::default() });
    app.focus = dashboard::app::Focus::Logs;
    app.zoom = true;
    let cut = format!("{}", screen(&app, 80, 24).backend());
    assert!(!cut.contains("the queue keeps flowing"), "cut at the edge by default:\n{cut}");
    app.on_key(key(KeyCode::Char('w')));
    assert!(app.logs.wrap);
    let terminal = screen(&app, 80, 24);
    insta::assert_snapshot!(terminal.backend());
    let text = format!("{}", terminal.backend());
    assert!(text.contains("the queue keeps flowing") && text.contains("wrapped"), "{text}");
    app.on_key(key(KeyCode::Char('w')));
    assert!(!app.logs.wrap, "w again cuts at the edge");
}

#[test]
fn the_level_filter_keeps_warnings_and_unstructured_lines() {
    let (mut app, _) = app(Fixed { resources: demo(), logs: demo_logs(), ..Fixed::default() });
    let all = app.logs.shown.len();
    app.on_key(key(KeyCode::Char('l')));
    app.on_key(key(KeyCode::Char('l')));
    let shown: Vec<&str> = app.logs.shown.iter().map(|&i| app.logs.lines[i].text.as_str()).collect();
    assert!(shown.len() < all);
    assert!(shown.iter().any(|t| t.contains("broker unreachable")), "{shown:?}");
    assert!(shown.iter().all(|t| !t.contains(" INFO ")), "{shown:?}");
    assert!(shown.iter().any(|t| t.starts_with("runtime:")), "lines without a level stay: {shown:?}");
}

#[test]
fn stopping_the_broker_asks_first_and_other_resources_do_not() {
    let (mut app, stack) = app(Fixed { resources: demo(), logs: demo_logs(), ..Fixed::default() });
    app.selected = 2;
    assert_eq!(app.on_key(key(KeyCode::Char('x'))), None, "the broker asks first");
    insta::assert_snapshot!(screen(&app, 80, 24).backend());
    assert_eq!(
        app.on_key(key(KeyCode::Char('y'))),
        Some(Effect::Act { resource: "broker".into(), action: Action::Stop })
    );
    app.on_key(key(KeyCode::Char('x')));
    assert_eq!(app.on_key(key(KeyCode::Char('n'))), None, "no means no");
    app.selected = 3;
    assert_eq!(
        app.on_key(key(KeyCode::Char('r'))),
        Some(Effect::Act { resource: "sender".into(), action: Action::Restart })
    );
    assert!(stack.sent.lock().unwrap().is_empty(), "keys only ask; the runner sends");
}

#[test]
fn help_lists_every_key_and_quit_asks() {
    let (mut app, _) = app(Fixed { resources: demo(), ..Fixed::default() });
    app.on_key(key(KeyCode::Char('?')));
    let text = format!("{}", screen(&app, 80, 24).backend());
    for (keys, _) in dashboard::panes::help::KEYS {
        assert!(text.contains(keys), "`{keys}` is in the help:\n{text}");
    }
    app.on_key(key(KeyCode::Char('x')));
    assert_eq!(app.dialog, None, "any key closes the help");
    app.on_key(key(KeyCode::Char('q')));
    assert_eq!(app.on_key(key(KeyCode::Char('y'))), Some(Effect::Quit));
}

#[test]
fn resizes_redraw_at_any_size() {
    let (app, _) = app(Fixed {
        resources: demo(),
        logs: demo_logs(),
        outbox: Some(outbox(60, |i| i as f64, |_| 1.0)),
        ..Fixed::default()
    });
    for (w, h) in [(80, 24), (40, 12), (200, 60), (20, 5), (1, 1), (0, 0)] {
        screen(&app, w, h);
    }
}

fn telemetry_stack() -> Fixed {
    Fixed {
        resources: demo(),
        logs: demo_logs(),
        spans: demo_spans(),
        records: demo_records(),
        telemetry: Some(demo_stats()),
        ..Fixed::default()
    }
}

#[test]
fn the_traces_pane_lists_and_filters_and_opens_a_waterfall() {
    let (mut app, _) = app(telemetry_stack());
    app.on_key(key(KeyCode::Char('t')));
    insta::assert_snapshot!("traces_80x24", screen(&app, 80, 24).backend());
    insta::assert_snapshot!("traces_120x40", screen(&app, 120, 40).backend());
    app.on_key(key(KeyCode::Char('e')));
    assert_eq!(app.traces.list.len(), 1, "only the trace with an error");
    app.on_key(key(KeyCode::Char('e')));
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.traces.open_id.as_deref(), Some(TRACE), "the newest trace opens");
    let text = format!("{}", screen(&app, 80, 24).backend());
    assert!(text.contains("waiting in the outbox") && text.contains("in the broker"), "{text}");
    insta::assert_snapshot!("trace_waterfall_80x24", screen(&app, 80, 24).backend());
    insta::assert_snapshot!("trace_waterfall_120x40", screen(&app, 120, 40).backend());
    app.on_key(key(KeyCode::Esc));
    assert!(app.traces.open.is_none());
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.screen, dashboard::app::Screen::Stack);
}

#[test]
fn structured_logs_filter_by_level_and_open_their_trace() {
    let (mut app, _) = app(telemetry_stack());
    app.on_key(key(KeyCode::Char('o')));
    insta::assert_snapshot!("records_80x24", screen(&app, 80, 24).backend());
    insta::assert_snapshot!("records_120x40", screen(&app, 120, 40).backend());
    app.on_key(key(KeyCode::Char('l')));
    app.on_key(key(KeyCode::Char('l')));
    assert_eq!(app.records.list.len(), 1, "≥warn: the one warning");
    app.on_key(key(KeyCode::Char('l')));
    app.on_key(key(KeyCode::Char('l')));
    // `/` filters by text, in the body or an attribute's `key=value`.
    app.on_key(key(KeyCode::Char('/')));
    typed(&mut app, "relays=4");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.records.list.len(), 1, "the record with relays=4: {:?}", app.records.list);
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.records.list.len(), 5, "Esc clears the filter");
    // The newest record names the POST's trace: Enter opens it.
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.screen, dashboard::app::Screen::Traces);
    assert_eq!(app.traces.open.as_ref().map(|t| t.spans.len()), Some(5));
}

#[test]
fn a_trace_id_in_a_log_line_opens_its_trace() {
    let mut stack = telemetry_stack();
    stack.logs.push(line(99, "apphost", Stream::System, &format!("scenario: item 0193a5 lost (trace {TRACE})")));
    let (mut app, _) = app(stack);
    app.on_key(key(KeyCode::Char('T')));
    assert_eq!(app.traces.open_id.as_deref(), Some(TRACE));
    assert_eq!(dashboard::app::trace_id_in("no id here 1234"), None);
}
