//! The real `sender` binary: configuration errors, a port in use, SIGTERM.

use std::{process::Stdio, time::Duration};

use testkit::{Postgres, eventually};

use crate::helpers::{dead_broker, env};

fn sender() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_sender"));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).kill_on_drop(true);
    c
}

#[tokio::test]
async fn a_missing_or_malformed_variable_is_named_at_startup() {
    let out = sender().output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`ConnectionStrings__sender-db`"), "{stderr}");

    let out = sender()
        .env("ConnectionStrings__sender-db", "postgres://u:p@127.0.0.1/db")
        .env("ConnectionStrings__broker", "amqp://u:p@127.0.0.1:5672")
        .env("OUTBOX_POLL_INTERVAL", "soon")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`OUTBOX_POLL_INTERVAL`") && stderr.contains("250ms"), "{stderr}");
}

#[tokio::test]
async fn a_port_in_use_is_reported_with_the_fix() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut vars = env("postgres://u:p@127.0.0.1/db", &dead_broker(), "q");
    vars.insert("PORT".into(), port.to_string());
    let out = sender().envs(vars).output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("port {port} is already in use")) && stderr.contains("`PORT`"), "{stderr}");
    assert!(!stderr.contains("u:p@"), "no secrets in errors: {stderr}");
}

#[tokio::test]
async fn sigterm_lets_the_sender_stop_gracefully() {
    let db = Postgres::shared().fresh_database().await;
    let port = testkit::free_port();
    let mut vars = env(&db, &dead_broker(), "q");
    vars.insert("PORT".into(), port.to_string());
    let mut child = sender().envs(vars).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let client = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/health/ready");
    eventually("the sender binary to be ready", Duration::from_secs(30), || async {
        client.get(&ready).send().await.ok()?.status().is_success().then_some(())
    })
    .await;
    testkit::process::signal(child.id().unwrap(), libc::SIGTERM);
    let status =
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("exits after SIGTERM").unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn health_check_asks_the_sender_beside_it() {
    let port = testkit::free_port();
    let check = || sender().arg("--health-check").env("PORT", port.to_string()).output();
    let out = check().await.unwrap();
    assert_eq!(out.status.code(), Some(1), "nothing listens yet");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("http://127.0.0.1:{port}/health/ready")), "{stderr}");

    let db = Postgres::shared().fresh_database().await;
    let mut vars = env(&db, &dead_broker(), "q");
    vars.insert("PORT".into(), port.to_string());
    let _child = sender().envs(vars).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    eventually("`sender --health-check` to pass", Duration::from_secs(30), || async {
        check().await.ok()?.status.success().then_some(())
    })
    .await;

    let out = sender().args(["--health-check", "--verbose"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: sender"));
}
