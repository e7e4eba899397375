//! Chaos commands against the running demo: writes keep succeeding during
//! the fault, and everything acknowledged is delivered once it is over.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{ONE_STACK, Stack, apphost, endpoint};

/// POSTs `n` items and returns their ids; every one must be acknowledged.
async fn post_items(sender: &str, n: usize, tag: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let response = client
            .post(format!("{sender}/api/EntityItems"))
            .json(&serde_json::json!({ "name": format!("{tag} {i}"), "value": i }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "a write during the fault was refused");
        let created: Value = response.json().await.unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Waits until the receiver has every id.
async fn all_delivered(receiver: &str, ids: &[String], limit: Duration) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + limit;
    for id in ids {
        loop {
            let status =
                client.get(format!("{receiver}/api/EntityItems/{id}")).send().await.map(|r| r.status().as_u16());
            if status.is_ok_and(|s| s == 200) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} never reached the receiver");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Whether an AMQP 1.0 peer answers the protocol header on `port`.
async fn amqp_answers(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"AMQP\x03\x01\x00\x00").await.ok()?;
        let mut header = [0u8; 8];
        stream.read_exact(&mut header).await.ok()?;
        Some(header.starts_with(b"AMQP"))
    };
    tokio::time::timeout(Duration::from_secs(3), attempt).await.ok().flatten().unwrap_or(false)
}

/// Whether the peer on `port` answers within `limit` (asked again every second).
async fn amqp_answers_within(port: u16, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !amqp_answers(port).await {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    true
}

async fn chaos(stack: &Stack, args: &[&str]) -> std::process::Output {
    apphost(&stack.state).arg("chaos").args(args).output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_broker_for_a_while_loses_nothing_on_the_process_runtime() {
    let _one = ONE_STACK.lock().await;
    let mut stack = Stack::up("process").await;
    let ps = stack.wait_healthy(Duration::from_secs(240)).await;
    let (sender, receiver) = (endpoint(&ps, "sender", "http"), endpoint(&ps, "receiver", "http"));

    let out = chaos(&stack, &["stop-broker", "--for", "5s"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ps_now = stack.ps().await.unwrap();
    assert_eq!(ps_now.iter().find(|s| s["name"] == "broker").unwrap()["state"], "stopped");
    let ids = post_items(&sender, 20, "during outage").await;
    all_delivered(&receiver, &ids, Duration::from_secs(120)).await;

    let events = apphost(&stack.state).args(["logs", "--events", "broker"]).output().await.unwrap();
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("chaos: stop for 5s requested"), "{events}");
    assert!(events.contains("chaos: after 5s: starting `broker`"), "{events}");

    let out = chaos(&stack, &["partition", "sender"]).await;
    assert!(!out.status.success(), "partition must not silently do nothing on processes");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not supported on the process runtime"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    apphost(&stack.state).arg("down").output().await.unwrap();
    stack.wait_exit(Duration::from_secs(90)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_and_kill_lose_nothing_on_the_docker_runtime() {
    let _one = ONE_STACK.lock().await;
    let mut stack = Stack::up("docker").await;
    let ps = stack.wait_healthy(Duration::from_secs(240)).await;
    let (sender, receiver) = (endpoint(&ps, "sender", "http"), endpoint(&ps, "receiver", "http"));

    let amqp: u16 = endpoint(&ps, "broker", "amqp").rsplit(':').next().unwrap().parse().unwrap();
    assert!(amqp_answers_within(amqp, Duration::from_secs(30)).await, "the broker answers before the partition");
    let out = chaos(&stack, &["partition", "broker", "--for", "8s"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!amqp_answers(amqp).await, "a partitioned broker is unreachable through its published port");
    let ids = post_items(&sender, 20, "during partition").await;
    all_delivered(&receiver, &ids, Duration::from_secs(120)).await;
    assert!(
        amqp_answers_within(amqp, Duration::from_secs(30)).await,
        "the broker is reachable again after the partition"
    );

    let out = chaos(&stack, &["kill", "receiver"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ids = post_items(&sender, 20, "after kill").await;
    all_delivered(&receiver, &ids, Duration::from_secs(120)).await;
    let ps = stack.ps().await.unwrap();
    assert_eq!(
        ps.iter().find(|s| s["name"] == "receiver").unwrap()["restarts"],
        1,
        "the killed receiver was restarted"
    );

    apphost(&stack.state).arg("down").output().await.unwrap();
    stack.wait_exit(Duration::from_secs(90)).await;
    assert_eq!(crate::helpers::docker_leftovers().await, Vec::<String>::new());
}
