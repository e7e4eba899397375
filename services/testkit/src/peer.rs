//! An independent AMQP peer: python-qpid-proton driven through `peer.py`.

use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::Artemis;

/// A message as the independent peer read it.
#[derive(Debug, Clone, Deserialize)]
pub struct Received {
    pub id: Option<String>,
    pub subject: Option<String>,
    pub content_type: Option<String>,
    pub durable: bool,
    pub properties: std::collections::HashMap<String, String>,
    pub annotations: std::collections::HashMap<String, String>,
    pub body_is_data: bool,
    pub body: String,
}

/// A message for the peer to send.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Outgoing {
    pub id: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    /// `data` (default), `string` (amqp-value string) or `map` (amqp-value map).
    pub body_kind: Option<String>,
    pub properties: Option<std::collections::HashMap<String, String>>,
}

fn python() -> String {
    std::env::var("TESTKIT_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/peer.py").to_owned()
}

fn command(broker: &Artemis, verb: &str, queue: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(python());
    c.arg(script())
        .arg(verb)
        .arg(format!("127.0.0.1:{}", broker.amqp_port()))
        .arg(broker.user())
        .arg(broker.password())
        .arg(queue)
        .kill_on_drop(true);
    c
}

/// Receives and accepts everything on `queue` until `idle_seconds` pass quietly.
pub async fn drain(broker: &Artemis, queue: &str, idle_seconds: u32) -> Vec<Received> {
    let out = command(broker, "drain", queue)
        .arg(idle_seconds.to_string())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("running peer.py (install python3-qpid-proton)");
    assert!(out.status.success(), "peer.py drain failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("peer.py prints JSON"))
        .collect()
}

/// Sends `messages` to `queue`.
pub async fn send(broker: &Artemis, queue: &str, messages: &[Outgoing]) {
    let mut child = command(broker, "send", queue)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running peer.py (install python3-qpid-proton)");
    let mut stdin = child.stdin.take().unwrap();
    for m in messages {
        stdin.write_all(serde_json::to_string(m).unwrap().as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "peer.py send failed: {}", String::from_utf8_lossy(&out.stderr));
}
