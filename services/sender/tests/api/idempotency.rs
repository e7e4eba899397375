//! `Idempotency-Key`: a retry gets the first answer, never a second item.

use std::time::Duration;

use serde_json::Value;
use testkit::{Postgres, eventually};

use crate::helpers::{TestApp, dead_broker};

#[tokio::test]
async fn a_key_gets_its_first_answer_again_and_never_a_second_item() {
    let db = Postgres::shared().fresh_database().await;
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;
    let body = r#"{"name":"once","value":1.50}"#;

    let first = app.post_keyed("order-1", body).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].clone();
    let first = first.text().await.unwrap();

    let again = app.post_keyed("\"order-1\"", body).await;
    assert_eq!(again.status(), 201, "the same key and body: the first answer");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.text().await.unwrap(), first, "byte for byte");

    let other = app.post_keyed("order-1", r#"{"name":"other","value":2}"#).await;
    assert_eq!(other.status(), 422, "the same key with another body");
    let problem: Value = other.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("order-1"), "{problem}");

    for bad in ["", &"k".repeat(256)] {
        let refused = app.post_keyed(bad, body).await;
        assert_eq!(refused.status(), 400, "key {bad:?}");
        let problem: Value = refused.json().await.unwrap();
        assert!(problem["errors"]["Idempotency-Key"].is_array(), "{problem}");
    }
    assert_eq!(app.count("entity_items").await, 1);
    assert_eq!(app.count("outbox").await, 1, "one event too");
}

/// Concurrent requests with one key: the first writes, the others wait for
/// it and replay its answer (or get 422 for another body); one item in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_never_both_write() {
    let db = Postgres::shared().fresh_database().await;
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;
    let same = (0..12).map(|_| app.post_keyed("race", r#"{"name":"race","value":1}"#));
    let answers = futures::future::join_all(same).await;
    let mut ids = Vec::new();
    for answer in answers {
        assert_eq!(answer.status(), 201);
        let item: Value = answer.json().await.unwrap();
        ids.push(item["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer names the one item: {ids:?}");

    let bodies: Vec<String> = (0..12).map(|i| format!(r#"{{"name":"m{i}","value":1}}"#)).collect();
    let mixed = bodies.iter().map(|body| app.post_keyed("mixed", body));
    let statuses: Vec<u16> = futures::future::join_all(mixed).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 422).count(), 11, "{statuses:?}");
    assert_eq!(app.count("entity_items").await, 2);
}

/// A COMMIT that the database made durable but never answered (its server
/// waits for a synchronous standby that never comes, and the session is
/// ended meanwhile) is answered "the outcome is unknown", not "nothing was
/// written"; the retry with the same key gets the item that was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_with_an_unknown_outcome_says_so_and_the_keyed_retry_gets_the_item() {
    let (pg, app) = commit_never_answered(Some("k-1")).await;
    let body = r#"{"name":"maybe","value":3}"#;
    let retry = app.post_keyed("k-1", body).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(app.count("entity_items").await, 1, "the retry did not store it twice");
    drop(pg);
}

/// The same without a key: the item and its event go in one statement that
/// commits by itself, and its commit left unanswered is unknown too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_statement_write_left_unanswered_says_its_outcome_is_unknown() {
    let (_pg, app) = commit_never_answered(None).await;
    assert_eq!(app.count("outbox").await, 1, "its event committed with it");
}

/// POSTs `{"name":"maybe","value":3}` (with `key`, if any) to a sender whose
/// database holds the commit for a standby, ends the waiting session, and
/// checks the answer says the outcome is unknown and the item was stored.
async fn commit_never_answered(key: Option<&'static str>) -> (Postgres, TestApp) {
    let pg = Postgres::start_private();
    let db = pg.fresh_database().await;
    let admin_url = format!("{}/postgres", db.rsplit_once('/').unwrap().0);
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    // testkit's servers skip synchronous commit for speed; this database waits as a real one does.
    let name = db.rsplit('/').next().unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} SET synchronous_commit = on")))
        .execute(&admin)
        .await
        .unwrap();
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;
    pg.hold_synchronous_commits().await;
    let body = r#"{"name":"maybe","value":3}"#;
    let post = tokio::spawn({
        let client = reqwest::Client::new();
        let url = format!("{}/api/EntityItems", app.base);
        async move {
            let mut request = client.post(url).header("content-type", "application/json");
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            request.body(body).send().await
        }
    });
    let waiting: i32 = eventually("the commit to wait for the standby", Duration::from_secs(20), || async {
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
            .fetch_optional(&admin)
            .await
            .ok()?
    })
    .await;
    sqlx::query("SELECT pg_terminate_backend($1)").bind(waiting).execute(&admin).await.unwrap();
    let answer = post.await.unwrap().unwrap();
    assert_eq!(answer.status(), 503);
    let problem: Value = answer.json().await.unwrap();
    assert_eq!(problem["title"], "the outcome is unknown", "{problem}");
    assert!(!problem["detail"].as_str().unwrap().contains("nothing was written"), "{problem}");
    pg.release_synchronous_commits().await;
    assert_eq!(app.count("entity_items").await, 1, "the commit was durable after all");
    (pg, app)
}
