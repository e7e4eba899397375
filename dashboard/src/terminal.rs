//! The runner: takes the terminal, reads keys and mouse on a thread of its
//! own, redraws at most [`Options::fps`] times a second and only when
//! something changed, and gives the terminal back on every way out,
//! panics included.

use std::{
    io::{self, Stdout},
    sync::{
        Arc, Once,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        event::{self, DisableMouseCapture, EnableMouseCapture, Event as Input},
        execute,
        terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
    },
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    app::{App, Effect},
    view::Stack,
};

pub struct Options {
    /// Upper bound on redraws per second.
    pub fps: u32,
    /// The stack runs on without this dashboard: quitting detaches.
    pub attached: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { fps: 10, attached: false }
    }
}

/// How the dashboard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The user quit: tear the stack down (or, attached, leave it running).
    Quit,
    /// `stop` was cancelled (the stack is going down for another reason).
    Stopped,
}

/// Whether the dashboard holds the terminal (raw mode, alternate screen).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Gives the terminal back, once: leaving the alternate screen a second time
/// would move the cursor back over what was printed since (a panic's message).
fn restore() {
    if !TAKEN.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), DisableMouseCapture, LeaveAlternateScreen, ratatui::crossterm::cursor::Show);
}

/// Restores the terminal when dropped: on return, on `?`, and on unwinding.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// The terminal is restored before a panic's message is printed, so the
/// message is readable and the shell is usable afterwards.
fn hook_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Debug builds only, for the tests: the key named by
/// `APPHOST_DASHBOARD_PANIC_KEY` makes the dashboard panic, to show that the
/// terminal comes back and the stack is taken down.
#[cfg(debug_assertions)]
fn panic_if_asked(key: &ratatui::crossterm::event::KeyEvent) {
    use ratatui::crossterm::event::KeyCode;
    if let Ok(wanted) = std::env::var("APPHOST_DASHBOARD_PANIC_KEY")
        && let Some(c) = wanted.chars().next()
        && key.code == KeyCode::Char(c)
    {
        panic!("the dashboard panics on `{c}`, as APPHOST_DASHBOARD_PANIC_KEY asks");
    }
}

fn take_terminal() -> io::Result<(Guard, Terminal<CrosstermBackend<Stdout>>)> {
    hook_panics();
    TAKEN.store(true, Ordering::SeqCst);
    let guard = Guard;
    enable_raw_mode()?;
    execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture)?;
    let terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    Ok((guard, terminal))
}

/// Shows `stack` until the user quits or `stop` is cancelled.
pub async fn run(stack: Arc<dyn Stack>, stop: CancellationToken, options: Options) -> io::Result<Exit> {
    let (_guard, mut terminal) = take_terminal()?;
    let (inputs, mut input) = mpsc::channel::<Input>(256);
    let reading = Arc::new(AtomicBool::new(true));
    {
        let reading = reading.clone();
        std::thread::Builder::new().name("dashboard-input".into()).spawn(move || {
            while reading.load(Ordering::Relaxed) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(true) => match event::read().map(|ev| inputs.blocking_send(ev)) {
                        Ok(Ok(())) => {}
                        _ => break,
                    },
                    Ok(false) => {}
                    Err(_) => break,
                }
            }
        })?;
    }
    let (answers, mut answered) = mpsc::unbounded_channel::<String>();
    let mut app = App::new(stack.clone());
    app.attached = options.attached;
    let frame_time = Duration::from_secs(1) / options.fps.max(1);
    let mut tick = tokio::time::interval(frame_time);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    let mut last_draw: Option<Instant> = None;
    let mut last_second = 0;
    let exit = loop {
        tokio::select! {
            _ = stop.cancelled() => break Exit::Stopped,
            ev = input.recv() => match ev {
                Some(Input::Key(key)) => {
                    #[cfg(debug_assertions)]
                    panic_if_asked(&key);
                    match app.on_key(key) {
                        Some(Effect::Quit) => break Exit::Quit,
                        Some(Effect::Act { resource, action }) => {
                            app.notice = Some(format!("{action} {resource}…"));
                            let answer = stack.act(&resource, action);
                            let answers = answers.clone();
                            tokio::spawn(async move {
                                let text = match answer.await {
                                    Ok(done) => format!("{action} {resource}: {done}"),
                                    Err(why) => format!("{action} {resource} failed: {why}"),
                                };
                                let _ = answers.send(text);
                            });
                        }
                        None => {}
                    }
                    dirty = true;
                }
                Some(Input::Mouse(mouse)) => {
                    app.on_mouse(mouse);
                    dirty = true;
                }
                Some(Input::Resize(..)) => {
                    terminal.autoresize()?;
                    dirty = true;
                }
                Some(_) => {}
                // The input thread ended: the terminal is gone.
                None => break Exit::Quit,
            },
            Some(text) = answered.recv() => {
                app.notice = Some(text);
                dirty = true;
            }
            _ = tick.tick() => {
                dirty |= app.refresh();
                // Uptimes move once a second even when nothing else does.
                let second = chrono::Utc::now().timestamp();
                if second != last_second {
                    last_second = second;
                    app.now = chrono::Utc::now();
                    dirty = true;
                }
            }
        }
        if dirty && last_draw.is_none_or(|t| t.elapsed() >= frame_time) {
            terminal.draw(|f| app.draw(f))?;
            last_draw = Some(Instant::now());
            dirty = false;
        }
    };
    // The reader stops at its next poll. It is not joined: on a terminal
    // that went away, crossterm's read can spin without returning, and a
    // join would hold the teardown hostage to it.
    reading.store(false, Ordering::Relaxed);
    drop(input);
    Ok(exit)
}
