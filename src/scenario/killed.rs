//! Scenario `apphost-killed`: a second copy of the stack (its own app name
//! and state folder, beside the one under test) is started by a child
//! `apphost up`, carries traffic, and is SIGKILLed; without anyone running
//! `apphost down`, its reaper must leave no process, container or network of
//! it behind (waited for with a generous deadline; the time it took is noted).

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use contracts::Endpoint;

use super::Report;
use crate::{
    runtime::docker,
    statedir::{PidFile, Secrets, Session, StateDir},
    supervisor::{State, Status},
};

fn apphost(file: &Path, state: &Path, app: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::from(crate::commands::this_apphost());
    c.env("APPHOST_STATE_DIR", state)
        .env("APPHOST_APP_NAME", app)
        .arg("-f")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Runs the scenario against a copy of the app in `file` on `runtime`.
pub async fn apphost_killed(file: &Path, runtime: &str, app: &str) -> Report {
    let started = Instant::now();
    let mut report = Report { scenario: "apphost-killed".into(), ..Default::default() };
    let state = std::env::temp_dir().join(format!("apphost-killed-{}", uuid::Uuid::new_v4().simple()));
    let copy = format!("{app}-killed");
    if let Err(e) = drive(file, runtime, &state, &copy, &mut report).await {
        report.failure = Some(e);
    }
    // Whatever happened, leave nothing: also the set-ups its `up` kept, which
    // no later run can reuse (they belong to a state folder that goes now).
    let _ = apphost(file, &state, &copy).args(["down", "--volumes"]).status().await;
    let _ = std::fs::remove_dir_all(&state);
    report.seconds = started.elapsed().as_secs_f64();
    report
}

async fn drive(file: &Path, runtime: &str, state: &Path, app: &str, report: &mut Report) -> Result<(), String> {
    let mut child = apphost(file, state, app)
        .args(["up", "--headless", "--no-build", "--runtime", runtime])
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start a second apphost: {e}"))?;
    let dir = StateDir { root: state.to_path_buf() };
    let client = crate::loopback::client(Some(Duration::from_secs(10)));
    // Up and healthy, through its control API.
    let deadline = Instant::now() + Duration::from_secs(300);
    let ps: Vec<Status> = loop {
        if let Some(session) = Session::load_live(&dir)
            && let Ok(ps) = crate::control::Client::new(&session).ps().await
            && !ps.is_empty()
            && ps.iter().all(|s| s.state == State::Healthy)
        {
            break ps;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the second apphost exited early ({status})"));
        }
        if Instant::now() > deadline {
            return Err("the second stack was not healthy within 300s".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let url = |name: &str| {
        ps.iter()
            .find(|s| s.name == name)
            .and_then(|s| Endpoint::http(&s.endpoints).map(str::to_owned))
            .ok_or_else(|| format!("the second stack has no `{name}` http endpoint"))
    };
    let (sender, receiver) = (url("sender")?, url("receiver")?);
    // Traffic through it, all delivered.
    let mut ids = Vec::new();
    for n in 0..20 {
        match super::demo::post_item(&client, &sender, format!("killed {n}"), n).await.map_err(|e| e.to_string())? {
            Ok(id) => ids.push(id),
            Err(_) => report.refused += 1,
        }
    }
    report.acknowledged = ids.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut delivered = 0;
        for id in &ids {
            if client.get(format!("{receiver}/api/EntityItems/{id}")).send().await.is_ok_and(|r| r.status() == 200) {
                delivered += 1;
            }
        }
        report.delivered = delivered;
        if delivered == ids.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report.lost = ids.len() - report.delivered;
    // Counted on the second receiver's projection, as every scenario counts them.
    let db = receiver_db(&dir, &ps)?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&db)
        .await
        .map_err(|e| format!("cannot reach the second receiver's database: {e}"))?;
    report.duplicate_effects = super::demo::extra_applications(&pool, &ids).await?;
    pool.close().await;
    let pids: Vec<u32> = PidFile::new(&dir).read().into_iter().map(|r| r.pid).collect();

    // SIGKILL: no teardown of its own.
    let pid = child.id().ok_or("the second apphost is gone already")?;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let _ = child.wait().await;
    let killed_at = Instant::now();
    report.notes.push(format!("SIGKILLed apphost (pid {pid}) running {} resources", ps.len()));

    // Nobody runs `down`: the reaper the killed apphost started removes everything.
    let deadline = Instant::now() + Duration::from_secs(120);
    let left = loop {
        let left = leftovers(&dir, &pids, app).await;
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !left.is_empty() {
        return Err(format!("120 s after the kill, without `apphost down`, these were left: {}", left.join(", ")));
    }
    let cleanup = killed_at.elapsed().as_secs_f64();
    report.recovery_seconds = Some(cleanup);
    report.notes.push(format!("its reaper removed every process, container and network {cleanup:.1} s after the kill"));
    if report.lost > 0 {
        return Err(format!("{} acknowledged items were not delivered before the kill", report.lost));
    }
    Ok(())
}

/// What of the killed stack is still there: its recorded processes, any
/// process carrying its owner mark, its containers and network, its session file.
async fn leftovers(dir: &StateDir, pids: &[u32], app: &str) -> Vec<String> {
    let mut left: Vec<String> =
        pids.iter().filter(|p| crate::statedir::process_running(**p)).map(|p| format!("process {p}")).collect();
    for pid in crate::statedir::marked(&dir.owner()) {
        if !pids.contains(&pid) {
            left.push(format!("process {pid} (a descendant)"));
        }
    }
    if let Ok(engine) = docker::connect().await {
        left.extend(docker::leftovers(&engine, app).await);
    }
    if dir.session_file().exists() {
        left.push("the session file".into());
    }
    left
}

/// The second stack's `receiver-db`, as its receiver reaches it: the user and
/// database the demo's file gives it, its generated password, its port.
fn receiver_db(dir: &StateDir, ps: &[Status]) -> Result<String, String> {
    let secrets = Secrets::load(dir).map_err(|e| format!("cannot read the second stack's secrets: {e}"))?;
    let password = secrets.get("receiver-db").ok_or("the second stack has no `receiver-db` password")?;
    let port = ps
        .iter()
        .find(|s| s.name == "receiver-db")
        .and_then(|s| s.endpoints.first())
        .and_then(|e| e.url.rsplit(':').next()?.parse::<u16>().ok())
        .ok_or("the second stack has no `receiver-db` endpoint")?;
    Ok(format!("postgres://apphost:{password}@127.0.0.1:{port}/receiver"))
}
