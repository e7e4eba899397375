//! `apphost up`: the app in the foreground, shown by the dashboard in a
//! terminal or as prefixed lines otherwise, until `down`, a signal or the
//! dashboard ends it; then a clean teardown.

use std::{path::Path, process::ExitCode, sync::Arc};

use miette::IntoDiagnostic;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::{
    headless::Printer,
    logs::{LogLine, LogStore, Stream},
    root::{UpOptions, claim, display_names, start},
    statedir::StateDir,
    topology::Topology,
    view::LiveStack,
};

/// Exit codes of `up`: 0 after `down`, 130 after SIGINT, 143 after SIGTERM, 129 after SIGHUP.
enum Ending {
    Down,
    Interrupted,
    Terminated,
    /// The terminal went away.
    HungUp,
    /// The dashboard panicked: the stack is taken down and apphost fails.
    DashboardCrashed,
}

pub async fn up(file: &Path, options: UpOptions) -> miette::Result<ExitCode> {
    let (topology, state, _lock) = claim(file)?;
    let logs = LogStore::for_session(options.log_capacity, &state.logs_dir());
    let own: Arc<str> = "apphost".into();
    let say = |text: &str| logs.push(&own, Stream::System, text);
    let names = display_names(&topology);
    if !options.dashboard {
        let stop_printing = CancellationToken::new();
        let printer = tokio::spawn(Printer::new(&names).run(logs.subscribe(), stop_printing.clone()));
        let result = run(&topology, &state, options, &logs, &say, None).await;
        stop_printing.cancel();
        let _ = printer.await;
        return result;
    }
    // The dashboard owns the screen: apphost's own lines go to a file.
    let log_path = state.log_file();
    let stop_own_log = CancellationToken::new();
    let own_log = write_own_lines(&logs, &log_path, stop_own_log.clone()).into_diagnostic()?;
    let stack = LiveStack::new(logs.clone());
    let stop = CancellationToken::new();
    let task = tokio::spawn(dashboard::run(stack.clone(), stop.clone(), dashboard::Options::default()));
    let mut ui = Ui { stack, stop, task: Some(task) };
    let result = run(&topology, &state, options, &logs, &say, Some(&mut ui)).await;
    // A failed start leaves the dashboard up: take it down before the error is printed.
    if let Some(task) = ui.task.take() {
        ui.stop.cancel();
        let _ = task.await;
    }
    stop_own_log.cancel();
    let _ = own_log.await;
    if result.is_err() {
        eprintln!("apphost's own log: {}", log_path.display());
    }
    result
}

/// Appends apphost's own lines (and its lines about each resource) to `path`.
/// Until `stop`, and then what was said before it.
fn write_own_lines(
    logs: &LogStore,
    path: &Path,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::io::Write;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut file = std::io::BufWriter::new(crate::statedir::private_log(path, false)?);
    let mut rx = logs.subscribe();
    Ok(tokio::spawn(async move {
        let write = |file: &mut std::io::BufWriter<std::fs::File>, line: Result<LogLine, RecvError>| match line {
            Ok(line) if &*line.resource == "apphost" || line.stream == Stream::System => {
                let at = line.at.format("%Y-%m-%dT%H:%M:%S%.3fZ");
                let _ = writeln!(file, "{at} {:<12} {}", line.resource, line.text);
            }
            Ok(_) | Err(RecvError::Closed) => {}
            Err(RecvError::Lagged(n)) => {
                let _ = writeln!(file, "… {n} lines of output went by too fast to sort through");
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                line = rx.recv() => {
                    let closed = matches!(line, Err(RecvError::Closed));
                    write(&mut file, line);
                    if closed {
                        break;
                    }
                    // Readable as it goes (`tail -f`), without a write per line.
                    if rx.is_empty() {
                        let _ = file.flush();
                    }
                }
            }
        }
        loop {
            match rx.try_recv() {
                Ok(line) => write(&mut file, Ok(line)),
                Err(TryRecvError::Lagged(n)) => write(&mut file, Err(RecvError::Lagged(n))),
                Err(_) => break,
            }
        }
        let _ = file.flush();
    }))
}

/// The dashboard of an `up` in a terminal.
struct Ui {
    stack: Arc<LiveStack>,
    stop: CancellationToken,
    /// Until `run` has waited for it.
    task: Option<tokio::task::JoinHandle<std::io::Result<dashboard::Exit>>>,
}

async fn run(
    topology: &Topology,
    state: &StateDir,
    options: UpOptions,
    logs: &LogStore,
    say: &impl Fn(&str),
    mut ui: Option<&mut Ui>,
) -> miette::Result<ExitCode> {
    // One view of the app: the dashboard (shown from before the build) and the control API read it.
    let view = ui.as_ref().map_or_else(|| LiveStack::new(logs.clone()), |ui| ui.stack.clone());
    // Listened for before the start: a signal while it runs (the build goes on after the
    // session is visible to `ps`) is kept, and answered by the teardown once it returns.
    let mut interrupt = signal(SignalKind::interrupt()).into_diagnostic()?;
    let mut terminate = signal(SignalKind::terminate()).into_diagnostic()?;
    let mut hangup = signal(SignalKind::hangup()).into_diagnostic()?;
    let app = start(topology, state, &options, logs, &view, say).await?;
    let ui_ended = async {
        match ui.as_mut().and_then(|ui| ui.task.as_mut()) {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    let mut dashboard_ended = false;
    let ending = tokio::select! {
        _ = app.down.cancelled() => Ending::Down,
        _ = interrupt.recv() => Ending::Interrupted,
        _ = terminate.recv() => Ending::Terminated,
        _ = hangup.recv() => Ending::HungUp,
        ended = ui_ended => {
            dashboard_ended = true;
            match ended {
                Ok(Ok(_)) => Ending::Down,
                Ok(Err(e)) => {
                    say(&format!("the dashboard lost the terminal: {e}"));
                    Ending::Down
                }
                Err(e) => {
                    say(&format!("the dashboard crashed ({e}); taking the stack down"));
                    Ending::DashboardCrashed
                }
            }
        }
    };
    // The screen is the terminal's again once the dashboard has given it back;
    // the teardown is told in plain lines, subscribed to now so none is missed.
    let printing = ui.map(|ui| {
        ui.stop.cancel();
        // A dashboard that ended on its own was waited for already.
        let ui_task = ui.task.take().filter(|_| !dashboard_ended);
        let lines = logs.subscribe();
        let stop_printing = CancellationToken::new();
        let names = display_names(topology);
        let printer = tokio::spawn({
            let stop_printing = stop_printing.clone();
            async move {
                if let Some(task) = ui_task {
                    let _ = task.await;
                }
                Printer::new(&names).run(lines, stop_printing).await
            }
        });
        (stop_printing, printer)
    });
    app.teardown(
        options.teardown,
        async move {
            interrupt.recv().await;
        },
        say,
    )
    .await;
    if let Some((stop_printing, printer)) = printing {
        stop_printing.cancel();
        let _ = printer.await;
    }
    if matches!(ending, Ending::DashboardCrashed) {
        eprintln!("apphost: the dashboard crashed (its panic is above); the stack was taken down");
    }
    Ok(match ending {
        Ending::Down => ExitCode::SUCCESS,
        Ending::Interrupted => ExitCode::from(130),
        Ending::Terminated => ExitCode::from(143),
        Ending::HungUp => ExitCode::from(129),
        Ending::DashboardCrashed => ExitCode::FAILURE,
    })
}
