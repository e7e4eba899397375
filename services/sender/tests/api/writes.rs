//! Keyless `POST`s written together (`sender::writes`): what is queued
//! commits in one statement, a bad item fails alone, and a request no
//! writer took in time writes nothing.

use std::time::Duration;

use serde_json::Value;
use testkit::Postgres;

use super::{
    helpers::{self, TestApp, dead_broker},
    problem,
};

/// One writer, and requests that wait for it as long as a test needs.
async fn one_writer(db: &str, wait: &str) -> TestApp {
    let mut env = helpers::env(db, &dead_broker(), "q");
    env.insert("DB_WRITERS".into(), "1".into());
    env.insert("DB_ACQUIRE_TIMEOUT".into(), wait.into());
    TestApp::spawn_with(env).await
}

/// `names` POSTed at once while the only writer is held by a lock on the
/// table (its first request waiting for it); once they are queued behind
/// it, the lock goes. Returns each answer, in `names`' order.
async fn queued_behind_a_held_writer(app: &TestApp, names: &[&str]) -> Vec<reqwest::Response> {
    let (lock, stuck) = app.post_held_by_a_lock().await;
    let requests: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let request = app
                .client
                .post(format!("{}/api/EntityItems", app.base))
                .header("content-type", "application/json")
                .body(format!(r#"{{"name":"{name}","value":{i}}}"#));
            tokio::spawn(async move { request.send().await.unwrap() })
        })
        .collect();
    // Long enough for the requests to be read and queued; the writer cannot take them meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    lock.rollback().await.unwrap();
    assert_eq!(stuck.await.unwrap().unwrap().status(), 201, "the request that held the writer");
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_posts_queued_together_commit_together_and_a_bad_one_fails_alone() {
    let db = Postgres::shared().fresh_database().await;
    let app = one_writer(&db, "60s").await;
    // A real refusal by the database, for one item only (P0001, severity ERROR: nothing written).
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poison item'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON entity_items FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&app.db)
    .await
    .unwrap();

    // Queued while the writer was busy: one statement took them, so one transaction.
    let names: Vec<String> = (0..10).map(|i| format!("together {i}")).collect();
    let answers = queued_behind_a_held_writer(&app, &names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let mut ids = Vec::new();
    for (name, answer) in names.iter().zip(answers) {
        assert_eq!(answer.status(), 201, "{name}");
        let item: Value = answer.json().await.unwrap();
        assert_eq!(item["name"], name.as_str(), "each request gets its own item");
        ids.push(item["id"].as_str().unwrap().to_owned());
    }
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT txid) FROM entity_items WHERE name LIKE 'together %'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(transactions < 10, "the queued items were not written together: {transactions} transactions for 10");
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'id' FROM outbox WHERE payload->>'name' LIKE 'together %' ORDER BY payload->>'id'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    ids.sort();
    assert_eq!(events, ids, "one event for each item answered, with its id");

    // One bad item among the queued: it fails, alone; the others are stored.
    let names: Vec<String> = (0..10).map(|i| if i == 4 { "poison".into() } else { format!("beside {i}") }).collect();
    let answers = queued_behind_a_held_writer(&app, &names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    for (name, answer) in names.iter().zip(answers) {
        if name == "poison" {
            let (status, body) = problem(answer).await;
            assert_eq!((status, body["detail"].as_str()), (500, Some("nothing was written")), "{body}");
        } else {
            assert_eq!(answer.status(), 201, "{name} was queued with the poison item");
        }
    }
    let stored: Vec<(String, bool)> = sqlx::query_as(
        "SELECT i.name, EXISTS (SELECT 1 FROM outbox o WHERE o.payload->>'id' = i.id::text)
           FROM entity_items i WHERE i.name LIKE 'beside %' OR i.name = 'poison' ORDER BY i.name",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let expected: Vec<(String, bool)> =
        names.iter().filter(|n| *n != "poison").map(|n| (n.clone(), true)).collect::<Vec<_>>();
    assert_eq!(stored, expected, "every item but the poison one, each with its event");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_post_no_writer_took_in_time_is_refused_and_never_written() {
    let db = Postgres::shared().fresh_database().await;
    let app = one_writer(&db, "1s").await;

    // The only writer waits for the lock with the first request, past that request's wait:
    // it took the item, so that request waits for its answer.
    let (lock, stuck) = app.post_held_by_a_lock().await;
    let (status, body) = problem(app.post_json(r#"{"name":"gave up","value":2}"#).await).await;
    assert_eq!((status, body["title"].as_str()), (503, Some("the database is unavailable")), "{body}");
    assert_eq!(body["detail"].as_str(), Some("nothing was written; retry shortly"), "{body}");

    lock.rollback().await.unwrap();
    assert_eq!(stuck.await.unwrap().unwrap().status(), 201, "the request whose item the writer had");
    // Behind the one that gave up in the queue: once this is stored, the writer is past it.
    assert_eq!(app.post_json(r#"{"name":"after","value":3}"#).await.status(), 201);
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM entity_items ORDER BY name").fetch_all(&app.db).await.unwrap();
    assert_eq!(names, ["after", "stuck"], "the request refused wrote nothing");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&app.db).await.unwrap();
    assert_eq!(events, 2, "nor its event");
    app.stop().await;
}
