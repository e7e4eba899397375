//! `apphost reaper` (hidden): what a killed apphost leaves is removed
//! without anyone running `down`, as Testcontainers' Ryuk does for its
//! containers. `up` starts it in a session of its own with a pipe on its
//! stdin and keeps the write end until it exits; the kernel closes that end
//! however apphost ends (SIGKILL included). At EOF the reaper takes the state
//! folder's lock, so it never races a new `up` there (which reaps for itself),
//! and removes every process of the folder (recorded groups, and anything
//! carrying its `APPHOST_OWNER`), every container and the network it owns,
//! and the session file. After a clean exit it finds nothing and leaves.

use std::{
    io::Write,
    path::Path,
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use tokio::io::AsyncReadExt;

use crate::{root::reap_leftovers, statedir::StateDir};

/// Starts the reaper of the app in `file`; it lives until this process is gone.
pub fn spawn(file: &Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut command = super::this_apphost();
    command.arg("-f").arg(file).arg("reaper").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid(2) is async-signal-safe; a terminal's Ctrl-C or hang-up does not reach it.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    // The write end stays open for the rest of this process's life: its close is the signal.
    std::mem::forget(child.stdin.take());
    std::mem::forget(child);
    Ok(())
}

pub async fn run(file: &Path) -> miette::Result<ExitCode> {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while stdin.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    let ended = Instant::now();
    let topology = crate::topology::load(file)?;
    let state = StateDir::for_topology(file);
    // A state folder it cannot trust is not acted on (as `down`).
    if state.ensure().is_err() {
        return Ok(ExitCode::FAILURE);
    }
    // The apphost's lock went with it; a new `up` that took it first reaps for itself.
    let Ok(Some(_lock)) = state.lock() else { return Ok(ExitCode::SUCCESS) };
    crate::statedir::Session::remove(&state);
    let removed = reap_leftovers(&topology, &state).await;
    let _ = std::fs::remove_dir_all(state.root.join("run"));
    if !removed.is_empty()
        && let Ok(mut log) = crate::statedir::private_log(&state.log_file(), false)
    {
        let took = ended.elapsed().max(Duration::from_millis(1));
        let _ = writeln!(
            log,
            "apphost | reaper: apphost ended without taking `{}` down; removed in {:.1}s: {}",
            topology.name,
            took.as_secs_f64(),
            removed.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
