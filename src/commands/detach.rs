//! `apphost up --detach`: the same `up`, headless, in a session of its own
//! with its output in `.apphost/apphost.log`; returns once all is healthy.

use std::{path::Path, process::ExitCode, time::Duration};

use miette::{IntoDiagnostic, miette};

use crate::{control::Client, root::claim, statedir::Session, supervisor::State};

pub async fn up_detached(file: &Path, args: &[String], env: &[(String, String)]) -> miette::Result<ExitCode> {
    // Checked here; the background apphost takes the lock for its life.
    let (topology, state, lock) = claim(file)?;
    drop(lock);
    let log_path = state.log_file();
    let log = crate::statedir::private_log(&log_path, false).into_diagnostic()?;
    let mut command = tokio::process::Command::from(super::this_apphost());
    command.arg("-f").arg(file).arg("up").arg("--headless").args(args).envs(env.iter().cloned());
    command
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().into_diagnostic()?)
        .stderr(log)
        .env("NO_COLOR", "1");
    // SAFETY: setsid(2) is async-signal-safe; it detaches the child from this terminal.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().into_diagnostic()?;
    // Only the session this child started counts: another `up` may have won the lock.
    let ours = child.id();
    println!("starting `{}` in the background (output: {})", topology.name, log_path.display());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    loop {
        if let Some(session) = Session::load_live(&state).filter(|s| Some(s.pid) == ours)
            && let Ok(statuses) = Client::new(&session).ps().await
            && !statuses.is_empty()
            && statuses.iter().all(|s| s.state == State::Healthy)
        {
            println!("`{}` is running (pid {}); every resource is healthy:", topology.name, session.pid);
            for s in statuses {
                let endpoints: Vec<String> = s.endpoints.iter().map(ToString::to_string).collect();
                println!("  {:<14} {:<8} {}", s.name, s.runtime, endpoints.join("  "));
            }
            println!("`apphost dashboard` watches it, `apphost logs -f` follows it, `apphost down` stops it");
            return Ok(ExitCode::SUCCESS);
        }
        // Something failed for good: say what, at once, instead of waiting out the deadline.
        if let Some(session) = Session::load_live(&state).filter(|s| Some(s.pid) == ours)
            && let Ok(statuses) = Client::new(&session).ps().await
            && let Some(failed) = statuses.iter().find(|s| matches!(s.state, State::Failed(_)))
        {
            for s in statuses.iter().filter(|s| matches!(s.state, State::Failed(_) | State::Blocked(_))) {
                eprintln!("  {:<14} {}", s.name, s.state.label());
            }
            return Err(miette!(
                help = format!(
                    "`apphost logs {}` shows its output ({} has apphost's); the rest of the app is still up: fix it and `apphost start {}`, or `apphost down`",
                    failed.name,
                    log_path.display(),
                    failed.name
                ),
                "`{}` {}",
                failed.name,
                failed.state.label()
            ));
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
            return Err(miette!(
                help = format!("the whole output is in {}", log_path.display()),
                "apphost exited while starting ({status})"
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(miette!(
                help = "`apphost ps` shows where it stands; `apphost down` stops it",
                "not every resource is healthy after 15 minutes"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
