//! One file per verb of the command line (`crate::cli` parses and
//! dispatches): [`up`] and [`detach`] run the app through
//! [`crate::root`]; [`down`] takes it down; [`test`] runs the reliability
//! scenarios; [`remote`] talks to a running session (`ps`, `logs`,
//! `dashboard`, `stop`/`start`/`restart`, `chaos`); [`check`] and
//! [`doctor`] look at the file and the machine without starting anything;
//! [`publish`] writes the app for another engine; [`traces`] reads what the
//! app's services sent its OTLP receiver.

pub mod check;
pub mod detach;
pub mod doctor;
pub mod down;
pub mod publish;
pub mod reaper;
pub mod remote;
pub mod test;
pub mod traces;
pub mod up;

/// A command that runs this apphost again, even once the file it was
/// started from is gone: apphost's build of the demo's services builds
/// apphost too (the same features, src/build.rs), and cargo replaces
/// `target/*/apphost` while it runs, so that path names another file (or
/// none) for a later start in the same invocation (`bench` starts the stack
/// several times). The kernel's link to the running image, /proc/self/exe,
/// does not move; `ps` still shows the path apphost was started from.
/// Outside Linux, that path.
pub fn this_apphost() -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let started_as = std::env::current_exe().unwrap_or_else(|_| "apphost".into());
    let own = std::path::Path::new("/proc/self/exe");
    let mut command = std::process::Command::new(if own.exists() { own } else { started_as.as_path() });
    command.arg0(started_as.to_string_lossy().trim_end_matches(" (deleted)"));
    command
}
