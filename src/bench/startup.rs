//! The start-up reference: one Artemis broker alone, started the way the
//! stack's broker runtime does, timed to its `AMQ221007: Server is now
//! active`. The slowest resource of the demo stack, so the stack can do no
//! better. The process runtime's: `artemis create` with apphost's arguments,
//! then `artemis run`. The docker runtime's: a container from the broker's
//! image with its environment (a password of its own), created and started.

use std::{
    collections::HashMap,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long a broker alone may take before the reference gives up.
const LIMIT: Duration = Duration::from_secs(120);

/// How long a container of `image` with `env` alone takes from created to
/// active. It carries `labels` (the app's and its owner's), so the test's
/// teardown, or the next run's reaper, removes it if the bench dies first.
pub async fn broker_container_alone(
    image: &str,
    env: &[(String, String)],
    labels: HashMap<String, String>,
) -> Result<Duration, String> {
    let docker = crate::runtime::docker::connect().await?;
    let name = format!("apphost-bench-reference-{}", uuid::Uuid::new_v4().simple());
    let env: Vec<String> = env
        .iter()
        .map(|(k, v)| match k.as_str() {
            "ARTEMIS_PASSWORD" => format!("{k}={}", uuid::Uuid::new_v4().simple()),
            _ => format!("{k}={v}"),
        })
        .collect();
    let body = bollard::models::ContainerCreateBody {
        image: Some(image.to_owned()),
        env: Some(env),
        labels: Some(labels),
        ..Default::default()
    };
    let began = Instant::now();
    docker
        .create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body)
        .await
        .map_err(|e| format!("creating the reference broker from `{image}`: {e}"))?;
    let active = async {
        docker.start_container(&name, None).await.map_err(|e| format!("starting the reference broker: {e}"))?;
        let options = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build();
        let mut logs = docker.logs(&name, Some(options));
        while let Some(chunk) = logs.next().await {
            let chunk = chunk.map_err(|e| format!("the reference broker's log: {e}"))?;
            if String::from_utf8_lossy(&chunk.into_bytes()).contains("AMQ221007") {
                return Ok(began.elapsed());
            }
        }
        Err("the reference broker ended before it was active".to_owned())
    };
    let result = tokio::time::timeout(LIMIT, active)
        .await
        .unwrap_or_else(|_| Err(format!("the reference broker was not active within {} s", LIMIT.as_secs())));
    let remove = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    let _ = docker.remove_container(&name, Some(remove)).await;
    result
}

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
    let active = tokio::time::timeout(LIMIT, async {
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
        Err(_) => Err(format!("the reference broker was not active within {} s", LIMIT.as_secs())),
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}
