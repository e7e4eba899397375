//! The start-up reference: one Artemis broker alone, created and run the way
//! the process runtime does (`artemis create` with apphost's arguments, then
//! `artemis run`), timed to its `AMQ221007: Server is now active`. The
//! slowest resource of the demo stack, so the stack can do no better.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::io::{AsyncBufReadExt, BufReader};

/// How long a broker alone takes from nothing to active (process runtime).
pub async fn broker_alone(scratch: &Path) -> Result<Duration, String> {
    let home = local_install::artemis_home().map_err(|e| e.to_string())?;
    let broker = scratch.join("reference-broker");
    let began = Instant::now();
    let create = tokio::process::Command::new(home.join("bin/artemis"))
        .args(crate::kinds::artemis::create_args(&broker, "apphost"))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("artemis create: {e}"))?;
    if !create.status.success() {
        return Err(format!("artemis create failed: {}", String::from_utf8_lossy(&create.stdout).trim()));
    }
    let xml_path = broker.join("etc/broker.xml");
    let xml = std::fs::read_to_string(&xml_path).map_err(|e| format!("{}: {e}", xml_path.display()))?;
    let (core, amqp) = (free_port()?, free_port()?);
    std::fs::write(&xml_path, crate::kinds::artemis::set_acceptor_ports(&xml, Some(core), Some(amqp)))
        .map_err(|e| format!("{}: {e}", xml_path.display()))?;
    let mut run = tokio::process::Command::new(broker.join("bin/artemis"))
        .arg("run")
        .env("JAVA_ARGS_APPEND", local_install::artemis_java_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("artemis run: {e}"))?;
    let mut lines = BufReader::new(run.stdout.take().expect("piped")).lines();
    let active = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("AMQ221007") {
                return Some(began.elapsed());
            }
        }
        None
    })
    .await;
    let _ = run.kill().await;
    let _ = std::fs::remove_dir_all(&broker);
    match active {
        Ok(Some(took)) => Ok(took),
        Ok(None) => Err("the reference broker ended before it was active".into()),
        Err(_) => Err("the reference broker was not active within 120 s".into()),
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}
