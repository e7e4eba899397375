//! The commands that talk to a running session through its control API:
//! `ps`, `logs`, `dashboard` (attach), `stop`/`start`/`restart` and `chaos`.

use std::{path::Path, process::ExitCode, time::Duration};

use contracts::Action;
use futures::StreamExt;
use miette::{IntoDiagnostic, miette};

use crate::{
    control::Client,
    statedir::{Session, StateDir},
    supervisor::Status,
    topology,
};

/// The running session of the app at `file`, or a clear error.
pub fn session(file: &Path) -> miette::Result<Session> {
    Session::load_live(&StateDir::for_topology(file)).ok_or_else(|| {
        miette!(help = "start it with `apphost up`", "no apphost is running the app of {}", file.display())
    })
}

pub async fn ps(file: &Path, json: bool) -> miette::Result<ExitCode> {
    let session = session(file)?;
    let client = Client::new(&session);
    if json {
        let statuses: Vec<Status> = client.ps().await.map_err(|e| miette!("{e}"))?;
        println!("{}", serde_json::to_string_pretty(&statuses).into_diagnostic()?);
        return Ok(ExitCode::SUCCESS);
    }
    // The table shows what the dashboard shows, from the same view.
    let response = client.get("/v1/view?limit=0").await.map_err(|e| miette!("{e}"))?;
    let view: dashboard::view::Snapshot = response.json().await.into_diagnostic()?;
    println!(
        "{:<16} {:<11} {:<8} {:<14} {:<10} {:>3} {:>7} {:>6} {:>6}  ENDPOINTS",
        "NAME", "KIND", "RUNTIME", "STATE", "HEALTH", "RST", "UPTIME", "CPU", "MEM"
    );
    let now = chrono::Utc::now();
    for r in view.resources {
        let uptime = r.up_since.map_or("-".into(), |t| dashboard::panes::duration((now - t).num_seconds()));
        let health = match (r.phase, r.health) {
            (dashboard::Phase::Up, dashboard::Health::Healthy) => "healthy",
            (dashboard::Phase::Up, dashboard::Health::Unhealthy) => "unhealthy",
            (dashboard::Phase::Up, dashboard::Health::Unknown) => "checking",
            _ => "-",
        };
        let cpu = r.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%"));
        let mem = r.memory_bytes.map_or("-".into(), dashboard::panes::bytes);
        println!(
            "{:<16} {:<11} {:<8} {:<14} {:<10} {:>3} {:>7} {:>6} {:>6}  {}",
            r.name,
            r.kind,
            r.runtime,
            r.state,
            health,
            r.restarts,
            uptime,
            cpu,
            mem,
            r.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `apphost dashboard`: the dashboard of a running session, from its control API.
pub async fn attach(file: &Path) -> miette::Result<ExitCode> {
    let session = session(file)?;
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(miette!(
            help = "run it in a terminal; `apphost ps` and `apphost logs -f` work anywhere",
            "the dashboard needs a terminal"
        ));
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let stack = crate::view::RemoteStack::connect(Client::new(&session), stop.clone(), stop.clone());
    let exit = dashboard::run(stack, stop.clone(), dashboard::Options { attached: true, ..Default::default() })
        .await
        .into_diagnostic()?;
    stop.cancel();
    match exit {
        dashboard::Exit::Quit => println!("detached; `{}` keeps running (`apphost down` stops it)", session.app),
        dashboard::Exit::Stopped => println!("`{}` is no longer running", session.app),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(
    file: &Path,
    resource: Option<String>,
    follow: bool,
    tail: usize,
    events: bool,
) -> miette::Result<ExitCode> {
    let session = session(file)?;
    let client = Client::new(&session);
    if events {
        let response = client.get("/v1/events").await.map_err(|e| miette!("{e}"))?;
        let events: Vec<crate::supervisor::Event> = response.json().await.into_diagnostic()?;
        for e in events.iter().filter(|e| resource.as_ref().is_none_or(|r| &e.resource == r)) {
            println!("{} {:<16} {}", e.at.format("%H:%M:%S%.3f"), e.resource, e.message);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut path = format!("/v1/logs?tail={tail}&follow={follow}");
    if let Some(r) = &resource {
        path.push_str(&format!("&resource={r}"));
    }
    let response = client.stream(&path).await.map_err(|e| miette!("{e}"))?;
    if !response.status().is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        return Err(miette!("{}", body["error"].as_str().unwrap_or("cannot read logs")));
    }
    let names = vec![resource.unwrap_or_default()];
    let printer = crate::headless::Printer::new(&names);
    let mut stream = response.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            if let Ok(line) = serde_json::from_slice::<crate::logs::LogLine>(&line) {
                println!("{}", printer.format(&line));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `stop`, `start`, `restart`: `action` on `resource` of the running app.
pub async fn act(file: &Path, resource: &str, action: Action) -> miette::Result<ExitCode> {
    let session = session(file)?;
    let answer = Client::new(&session).act(resource, action, None, false).await.map_err(|e| miette!("{e}"))?;
    println!("{answer}");
    Ok(ExitCode::SUCCESS)
}

/// `apphost chaos`: `action` on `resource` (the broker when `None`), recorded as chaos, undone after `lasting`.
pub async fn chaos(
    file: &Path,
    resource: Option<String>,
    action: Action,
    lasting: Option<Duration>,
) -> miette::Result<ExitCode> {
    let resource = match resource {
        Some(resource) => resource,
        None => {
            let t = topology::load(file)?;
            t.resources
                .iter()
                .find(|r| r.kind.spec().is_broker())
                .map(|r| r.name.clone())
                .ok_or_else(|| miette!("{} has no artemis resource to stop", file.display()))?
        }
    };
    let session = session(file)?;
    let answer = Client::new(&session).act(&resource, action, lasting, true).await.map_err(|e| miette!("{e}"))?;
    let lasting = lasting.map(|d| format!(" (undone after {d:?})")).unwrap_or_default();
    println!("{answer}{lasting}");
    Ok(ExitCode::SUCCESS)
}
