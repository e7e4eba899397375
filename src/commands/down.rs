//! `apphost down`: asks a running session to stop and waits for it; without
//! one, removes whatever a crashed run left.

use std::{path::Path, process::ExitCode, time::Duration};

use miette::{IntoDiagnostic, miette};

use crate::{
    control::Client,
    root::{reap_leftovers, remove_kept},
    statedir::{Session, StateDir, process_running},
    topology,
};

/// How long a running session may take to go down before `down` gives up on it.
const WAIT: Duration = Duration::from_secs(120);

pub async fn down(file: &Path, volumes: bool) -> miette::Result<ExitCode> {
    let topology = topology::load(file)?;
    let state = StateDir::for_topology(file);
    // Records in a folder others could write are not acted on.
    if state.root.exists() {
        state.ensure().into_diagnostic()?;
    }
    let mut stopped = false;
    if let Some(session) = Session::load_live(&state) {
        stop(&state, &session).await?;
        println!("`{}` is down", session.app);
        if !volumes {
            return Ok(ExitCode::SUCCESS);
        }
        stopped = true;
    }
    // No apphost may start here while the leftovers go.
    let lock = if state.root.exists() {
        state.lock_within(Duration::from_secs(30))
    } else {
        Err(std::io::ErrorKind::NotFound.into())
    };
    let _lock = match lock {
        Ok(Some(lock)) => Some(lock),
        Ok(None) => {
            return Err(miette!(
                help = "wait until it has started, then `apphost down` again",
                "an apphost is starting `{}` here ({} is locked)",
                topology.name,
                state.lock_file().display()
            ));
        }
        // A folder that cannot hold a lock (read-only) has nothing apphost started.
        Err(_) => None,
    };
    Session::remove(&state);
    let mut removed = reap_leftovers(&topology, &state).await;
    let _ = std::fs::remove_dir_all(state.root.join("run"));
    if volumes {
        removed.extend(remove_kept(&topology, &state).await);
    }
    if removed.is_empty() && !stopped {
        println!("nothing of `{}` is running", topology.name);
    }
    for r in removed {
        println!("removed {r}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the running `session` to go down and waits until it has.
async fn stop(state: &StateDir, session: &Session) -> miette::Result<()> {
    Client::new(session)
        .down()
        .await
        .map_err(|e| miette!("the running apphost (pid {}) did not answer: {e}", session.pid))?;
    // Done when the session is gone: its file removed, or the process dead
    // (a zombie counts: its parent may simply not have reaped it yet).
    let deadline = tokio::time::Instant::now() + WAIT;
    while state.session_file().exists() && process_running(session.pid) {
        if tokio::time::Instant::now() > deadline {
            return Err(miette!(
                help = format!(
                    "`apphost ps` shows what is still up; its output is in {}; `kill {}` ends it, and `apphost down` then removes what it left",
                    state.log_file().display(),
                    session.pid
                ),
                "`{}` is still going down after {}s (apphost pid {})",
                session.app,
                WAIT.as_secs(),
                session.pid
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
