//! Sender → Artemis → receiver, both services in this process.

use std::{collections::HashMap, time::Duration};

use futures::{StreamExt, stream};
use serde_json::Value;
use testkit::{Artemis, Postgres, eventually};
use tokio_util::sync::CancellationToken;

use crate::helpers::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_posts_are_all_stored_by_the_receiver() {
    const POSTS: usize = 1_000;
    let broker = Artemis::shared();
    let queue = testkit::unique("q");
    let sender_db = Postgres::shared().fresh_database().await;
    let receiver_db = Postgres::shared().fresh_database().await;
    let sender = TestApp::spawn(&sender_db, &broker.amqp_url(), &queue).await;

    let receiver_env: HashMap<String, String> = [
        ("ConnectionStrings__receiver-db", receiver_db.as_str()),
        ("ConnectionStrings__broker", &broker.amqp_url()),
        ("PORT", "0"),
        ("HOST", "127.0.0.1"),
        ("RECEIVER_ADDRESS", &queue),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let receiver = receiver::Application::build(receiver::Settings::from_env(&receiver_env).unwrap()).await.unwrap();
    let receiver_base = format!("http://127.0.0.1:{}", receiver.port());
    let cancel = CancellationToken::new();
    let receiver_task = tokio::spawn(receiver.run_until_stopped(cancel.clone()));

    let created: Vec<Value> = stream::iter(0..POSTS)
        .map(|i| {
            let sender = &sender;
            async move {
                let response = sender.post_json(&format!(r#"{{"name":"item {i}","value":{i}.{i}}}"#)).await;
                assert_eq!(response.status(), 201);
                response.json::<Value>().await.unwrap()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    let receiver_pool = sqlx::PgPool::connect(&receiver_db).await.unwrap();
    eventually("the receiver to store every item", Duration::from_secs(120), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM entity_items").fetch_one(&receiver_pool).await.ok()?;
        (n == POSTS as i64).then_some(())
    })
    .await;
    let stored: Vec<(uuid::Uuid, String, String)> =
        sqlx::query_as("SELECT id, name, value::text FROM entity_items").fetch_all(&receiver_pool).await.unwrap();
    let stored: HashMap<String, (String, String)> =
        stored.into_iter().map(|(id, name, value)| (id.to_string(), (name, value))).collect();
    for item in &created {
        let (name, value) = &stored[item["id"].as_str().unwrap()];
        assert_eq!(name, item["name"].as_str().unwrap());
        assert_eq!(value.parse::<f64>().unwrap(), item["value"].as_f64().unwrap());
    }
    assert_eq!(testkit::metric(&receiver_base, "receiver_processed_total").await, POSTS as f64);
    assert_eq!(testkit::metric(&receiver_base, "receiver_rejected_total").await, 0.0);

    // Every message's time is split into its stages (docs/contracts.md), each counted once per message.
    let n = POSTS as f64;
    let published = testkit::metric(&sender.base, "outbox_published_total").await;
    assert_eq!(published, n);
    for stage in ["outbox_wait_seconds", "outbox_send_seconds", "outbox_accept_seconds"] {
        let count = testkit::metric(&sender.base, &format!("{stage}_count")).await;
        assert!(count >= n, "{stage}: {count} observations for {POSTS} messages");
    }
    for stage in ["receiver_delivery_seconds", "receiver_batch_wait_seconds"] {
        let count = testkit::metric(&receiver_base, &format!("{stage}_count")).await;
        assert!(count >= n, "{stage}: {count} observations for {POSTS} messages");
    }
    let commits = testkit::metric(&receiver_base, "receiver_commit_seconds_count").await;
    assert!((1.0..=n).contains(&commits), "{commits} commits for {POSTS} messages");

    // The receiver serves what it stored.
    let one = &created[0];
    let fetched: Value = reqwest::get(format!("{receiver_base}/api/EntityItems/{}", one["id"].as_str().unwrap()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(&fetched, one);

    cancel.cancel();
    receiver_task.await.unwrap().unwrap();
    sender.stop().await;
}

/// Requests that hold every connection of the sender's pool (here its only
/// one, waiting behind a lock) do not stop the relay: it publishes over
/// connections of its own, so a flood of POSTs cannot starve the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_holding_every_connection_do_not_stop_the_relay() {
    let broker = Artemis::shared();
    let db = Postgres::shared().fresh_database().await;
    let mut env = crate::helpers::env(&db, &broker.amqp_url(), &testkit::unique("q"));
    env.insert("DB_POOL_SIZE".into(), "1".into());
    env.insert("DB_ACQUIRE_TIMEOUT".into(), "60s".into());
    let app = TestApp::spawn_with(env).await;
    let pending = async || sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox").fetch_one(&app.db).await.ok();

    let (lock, stuck) = app.post_held_by_a_lock().await;
    // A row written beside this sender (as another replica's would be) is published meanwhile.
    sqlx::query("INSERT INTO outbox (id, event_type, payload) VALUES ($1, 'EntityItemCreated', '{}')")
        .bind(uuid::Uuid::now_v7())
        .execute(&app.db)
        .await
        .unwrap();
    eventually("the relay to publish while requests hold the pool", Duration::from_secs(30), || async {
        (pending().await? == 0).then_some(())
    })
    .await;

    lock.rollback().await.unwrap();
    assert_eq!(stuck.await.unwrap().unwrap().status(), 201, "the request goes on once the lock is gone");
    app.stop().await;
}
