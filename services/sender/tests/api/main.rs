//! The sender's HTTP contract and its outbox guarantees, against a real
//! PostgreSQL and a real Artemis.

mod binary;
mod end_to_end;
mod fuzz;
mod helpers;
mod idempotency;
mod writes;

use std::time::Duration;

use helpers::{TestApp, dead_broker};
use serde_json::Value;
use testkit::{Artemis, Postgres, eventually};

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/problem+json", "status {status}");
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn create_then_read_back_one_and_all_pages() {
    let db = Postgres::shared().fresh_database().await;
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;

    let response = app.post_json(r#"{"name":"widget","value":12345678901234.000000001}"#).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let text = response.text().await.unwrap();
    assert!(text.contains(r#""value":12345678901234.000000001"#), "decimals stay exact: {text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(location, format!("/api/EntityItems/{}", created["id"].as_str().unwrap()));
    assert_eq!(created["name"], "widget");
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));

    let fetched: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(fetched, created);

    for i in 0..4 {
        assert_eq!(app.post_json(&format!(r#"{{"name":"n{i}","value":{i}}}"#)).await.status(), 201);
    }
    // A row is listed once every older transaction on the server has ended (other tests share it).
    eventually("all five items to be listed", Duration::from_secs(30), || async {
        let all: Value = app.get("/api/EntityItems").await.json().await.ok()?;
        (all["items"].as_array()?.len() == 5).then_some(())
    })
    .await;
    let mut seen = Vec::new();
    let mut path = "/api/EntityItems?limit=2".to_owned();
    loop {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200);
        let has_link = response.headers().contains_key("link");
        let page: Value = response.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["name"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => {
                assert!(has_link, "a next page is also announced in a Link header");
                path = format!("/api/EntityItems?limit=2&after={next}");
            }
            None => break,
        }
    }
    assert_eq!(seen, ["widget", "n0", "n1", "n2", "n3"], "pages in creation order, each item once");
    let all: Value = app.get("/api/EntityItems").await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
    assert!(all["next"].is_null());
}

/// A client that reads to the end and later reads on from the last item it
/// saw gets every item once, also one whose transaction took its id first
/// but committed after later items were already read.
#[tokio::test]
async fn reading_on_from_the_last_item_seen_never_skips_a_late_commit() {
    let db = Postgres::shared().fresh_database().await;
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();

    // A writer takes an early id (UUIDv7: id order is creation order) and is slow to commit.
    let mut slow = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO entity_items (id, name, value) VALUES ($1, 'slow', 1)")
        .bind(uuid::Uuid::now_v7())
        .execute(&mut *slow)
        .await
        .unwrap();
    for name in ["n0", "n1"] {
        assert_eq!(app.post_json(&format!(r#"{{"name":"{name}","value":1}}"#)).await.status(), 201);
    }
    let (mut seen, mut last) = (Vec::new(), None);
    read_on(&app, &mut seen, &mut last).await;
    slow.commit().await.unwrap();
    assert_eq!(app.post_json(r#"{"name":"n2","value":1}"#).await.status(), 201);
    // A row shows once every older transaction on the server has ended (other tests share it).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 4 && std::time::Instant::now() < deadline {
        read_on(&app, &mut seen, &mut last).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, ["slow", "n0", "n1", "n2"], "every item once, in the order they became visible");

    let (status, body) = problem(app.get(&format!("/api/EntityItems?after={}", uuid::Uuid::now_v7())).await).await;
    assert_eq!(status, 404, "an `after` that is no item is not found: {body}");
}

/// Reads pages from `last` (or the start) to the end, as a client keeping its place does.
async fn read_on(app: &TestApp, seen: &mut Vec<String>, last: &mut Option<String>) {
    loop {
        let path = match last {
            Some(id) => format!("/api/EntityItems?limit=2&after={id}"),
            None => "/api/EntityItems?limit=2".to_owned(),
        };
        let page: Value = app.get(&path).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["name"].as_str().unwrap().to_owned());
            *last = Some(item["id"].as_str().unwrap().to_owned());
        }
        if page["next"].is_null() {
            return;
        }
    }
}

#[tokio::test]
async fn bad_input_gets_a_problem_naming_the_field_and_writes_nothing() {
    let db = Postgres::shared().fresh_database().await;
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;
    let long = "x".repeat(201);
    // (what, content type, body, status, the field the problem names)
    type Case<'a> = (&'a str, Option<&'a str>, String, u16, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("malformed JSON", Some("application/json"), r#"{"name": "a", "value": "#.into(), 400, None),
        ("not an object", Some("application/json"), "[1]".into(), 400, None),
        ("wrong content type", Some("text/plain"), r#"{"name":"a","value":1}"#.into(), 415, None),
        ("no content type", None, r#"{"name":"a","value":1}"#.into(), 415, None),
        ("missing name", Some("application/json"), r#"{"value":1}"#.into(), 400, Some("name")),
        ("empty name", Some("application/json"), r#"{"name":"","value":1}"#.into(), 400, Some("name")),
        ("too long name", Some("application/json"), format!(r#"{{"name":"{long}","value":1}}"#), 400, Some("name")),
        ("non-numeric value", Some("application/json"), r#"{"name":"a","value":"ten"}"#.into(), 400, Some("value")),
        ("missing value", Some("application/json"), r#"{"name":"a"}"#.into(), 400, Some("value")),
        (
            "unknown field",
            Some("application/json"),
            r#"{"name":"a","value":1,"owner":"me"}"#.into(),
            400,
            Some("owner"),
        ),
        (
            "body over 64 KiB",
            Some("application/json"),
            format!(r#"{{"name":"a","value":1,"pad":"{}"}}"#, "x".repeat(70_000)),
            413,
            None,
        ),
    ];
    for (what, content_type, body, status, field) in cases {
        let mut request = app.client.post(format!("{}/api/EntityItems", app.base)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let (got, body) = problem(request.send().await.unwrap()).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["status"], status, "{what}");
        assert!(body["title"].is_string(), "{what}");
        if let Some(field) = field {
            assert!(body["errors"][field].is_array(), "{what}: the field `{field}` is named in {body}");
        }
    }
    for (path, field) in [
        ("/api/EntityItems/not-a-uuid", "id"),
        ("/api/EntityItems?limit=0", "limit"),
        ("/api/EntityItems?limit=1001", "limit"),
        ("/api/EntityItems?limit=ten", "limit"),
        ("/api/EntityItems?after=42", "after"),
        ("/api/EntityItems?colour=red", "colour"),
    ] {
        let (status, body) = problem(app.get(path).await).await;
        assert_eq!(status, 400, "{path}");
        assert!(body["errors"][field].is_array(), "{path}: {body}");
    }
    let (status, _) = problem(app.get(&format!("/api/EntityItems/{}", uuid::Uuid::now_v7())).await).await;
    assert_eq!(status, 404);
    let (status, _) = problem(app.get("/no/such/path").await).await;
    assert_eq!(status, 404);

    assert_eq!(app.count("entity_items").await, 0, "bad input writes no item");
    assert_eq!(app.count("outbox").await, 0, "bad input writes no outbox row");
}

#[tokio::test]
async fn the_item_and_its_outbox_row_commit_together_or_not_at_all() {
    let db = Postgres::shared().fresh_database().await;
    // No broker: outbox rows stay put for inspection.
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;
    let created: Value = app.post_json(r#"{"name":"a","value":1}"#).await.json().await.unwrap();
    let (event_type, payload): (String, String) =
        sqlx::query_as("SELECT event_type, payload::text FROM outbox").fetch_one(&app.db).await.unwrap();
    assert_eq!(event_type, "EntityItemCreated");
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload, created, "the event carries the stored item");

    // A failure between the two inserts: the outbox insert raises.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let (status, body) = problem(app.post_json(r#"{"name":"b","value":2}"#).await).await;
    assert_eq!(status, 500);
    assert!(!body.to_string().contains("injected"), "internals stay in the log: {body}");
    assert_eq!(app.count("entity_items").await, 1, "the item insert was rolled back");
    assert_eq!(app.count("outbox").await, 1);
}

/// A POST without a key writes its item and event in one statement, the
/// event built by the database; it must be byte for byte what
/// `outbox::enqueue` stores for the item as `serde_json` writes it (the POST's
/// answer), or the message body would depend on which path wrote it.
#[tokio::test]
async fn the_one_statement_event_is_the_one_enqueue_stores() {
    let db = Postgres::shared().fresh_database().await;
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;
    let values = ["0", "1", "1.50", "100", "-0.5", "0.000001", "12345678901234.000000001", "1e3", "-42.4200"];
    let names = [r#"quote " backslash \ slash / <html> & '"#, "ünïcödé ✓ 𝄞", "plain"];
    for (i, value) in values.iter().enumerate() {
        let name = names[i % names.len()];
        let json_name = serde_json::to_string(name).unwrap();
        let response = app.post_json(&format!(r#"{{"name":{json_name},"value":{value}}}"#)).await;
        assert_eq!(response.status(), 201, "{name} {value}");
        let answer = response.text().await.unwrap();
        let id = serde_json::from_str::<Value>(&answer).unwrap()["id"].as_str().unwrap().to_owned();
        let (stored, enqueued): (String, String) =
            sqlx::query_as("SELECT payload::text, $1::jsonb::text FROM outbox WHERE payload->>'id' = $2")
                .bind(&answer)
                .bind(&id)
                .fetch_one(&app.db)
                .await
                .unwrap();
        assert_eq!(stored, enqueued, "value {value}, name {name}: the answer was {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_fast_and_heals_by_itself() {
    let pg = Postgres::start_private();
    let db = pg.fresh_database().await;
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;
    assert_eq!(app.post_json(r#"{"name":"before","value":1}"#).await.status(), 201);

    pg.stop();
    // The client gives up after 20 s; the answer must come well before (bounded pool wait).
    let (status, body) = problem(app.post_json(r#"{"name":"during","value":2}"#).await).await;
    assert_eq!(status, 503, "{body}");
    let (status, _) = problem(app.get("/api/EntityItems").await).await;
    assert_eq!(status, 503);
    assert_eq!(app.get("/health/ready").await.status(), 503);
    assert_eq!(app.get("/health/live").await.status(), 200);

    pg.start();
    eventually("writes to succeed again without a restart", Duration::from_secs(30), || async {
        (app.post_json(r#"{"name":"after","value":3}"#).await.status() == 201).then_some(())
    })
    .await;
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM entity_items ORDER BY id")
        .fetch_all(&PgPoolCheck::connect(&db).await)
        .await
        .unwrap();
    assert_eq!(names.first().map(String::as_str), Some("before"));
    assert!(!names.contains(&"during".to_owned()), "a 503 wrote nothing");
    app.stop().await;
}

/// The write connections go back to their pool without a ping, so one the
/// server ended must be closed by the request that found it dead, or every
/// write within the idle check's second would be handed the same corpse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_connection_the_server_ended_is_replaced_not_handed_out_again() {
    let db = Postgres::shared().fresh_database().await;
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;
    assert_eq!(app.post_json(r#"{"name":"before","value":1}"#).await.status(), 201);

    // An administrator (or a failover) ends the sender's request connections; each is told FATAL 57P01.
    // A backend may also end on its own between the SELECT and the terminate (false), so what
    // must hold is that one was ended here and none of those seen is still alive.
    let ended: Vec<(i32, bool)> = sqlx::query_as(
        "SELECT pid, pg_terminate_backend(pid, 5000) FROM pg_stat_activity
          WHERE application_name = 'sender' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(ended.iter().any(|&(_, e)| e), "the write's connection was open: {ended:?}");
    let pids: Vec<i32> = ended.iter().map(|&(pid, _)| pid).collect();
    let alive: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
        .bind(&pids)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(alive, 0, "every connection seen was ended: {ended:?}");

    // The first write finds its connection dead: 503, outcome unknown (the server said nothing of it).
    let (status, body) = problem(app.post_json(r#"{"name":"found it dead","value":2}"#).await).await;
    assert_eq!(status, 503, "{body}");
    // The next ones, at once (within the idle check's second), get a connection that works.
    for i in 0..3 {
        let response = app.post_json(&format!(r#"{{"name":"after {i}","value":{i}}}"#)).await;
        assert_eq!(response.status(), 201, "write {i} after the one that found the dead connection");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_beyond_the_limit_is_refused_at_once_and_the_sender_stays_ready() {
    let db = Postgres::shared().fresh_database().await;
    let mut env = helpers::env(&db, &dead_broker(), "q");
    // One request connection, one request at a time, and a pool wait longer than the client's.
    env.insert("DB_POOL_SIZE".into(), "1".into());
    env.insert("HTTP_MAX_IN_FLIGHT".into(), "1".into());
    env.insert("DB_ACQUIRE_TIMEOUT".into(), "60s".into());
    let app = TestApp::spawn_with(env).await;

    // The first POST holds the only request connection and the only request slot.
    let (lock, stuck) = app.post_held_by_a_lock().await;

    // Without the limit this one would queue for the connection past the client's timeout.
    let refused = app.post_json(r#"{"name":"refused","value":2}"#).await;
    assert_eq!(refused.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    let (status, body) = problem(refused).await;
    assert_eq!((status, body["title"].as_str()), (503, Some("the service is at capacity")), "{body}");
    let (status, _) = problem(app.get("/api/EntityItems").await).await;
    assert_eq!(status, 503, "reads count against the same limit");
    // Busy is not down: readiness asks on a connection of its own.
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    assert!(!stuck.is_finished(), "the first POST was still held when the others were answered");

    lock.rollback().await.unwrap();
    assert_eq!(stuck.await.unwrap().unwrap().status(), 201, "the held request goes on once the lock is gone");
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM entity_items").fetch_all(&app.db).await.unwrap();
    assert_eq!(names, ["stuck"], "the refused request wrote nothing");
    assert_eq!(app.post_json(r#"{"name":"after","value":3}"#).await.status(), 201, "capacity is back");
    app.stop().await;
}

/// A fresh pool (the app's test pool may hold connections killed by the outage).
struct PgPoolCheck;
impl PgPoolCheck {
    async fn connect(url: &str) -> sqlx::PgPool {
        sqlx::PgPool::connect(url).await.unwrap()
    }
}

#[tokio::test]
async fn a_broker_outage_keeps_writes_succeeding_and_shows_the_backlog() {
    let db = Postgres::shared().fresh_database().await;
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;
    for i in 0..3 {
        assert_eq!(app.post_json(&format!(r#"{{"name":"n{i}","value":{i}}}"#)).await.status(), 201);
    }
    eventually("the backlog to show in /metrics", Duration::from_secs(10), || async {
        (testkit::metric(&app.base, "outbox_pending").await == 3.0).then_some(())
    })
    .await;
    assert_eq!(testkit::metric(&app.base, "outbox_broker_connected").await, 0.0);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200, "a broker outage does not make the sender unready");
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["broker"], "disconnected");
    assert_eq!(body["outbox"]["pending"], 3);
    assert!(body["outbox"]["oldestPendingSeconds"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn health_metrics_openapi_and_swagger_are_served() {
    let db = Postgres::shared().fresh_database().await;
    let broker = Artemis::shared();
    let app = TestApp::spawn(&db, &broker.amqp_url(), &testkit::unique("q")).await;
    assert_eq!(app.get("/health/live").await.status(), 200);
    let ready: Value = app.get("/health/ready").await.json().await.unwrap();
    assert_eq!(ready["status"], "Healthy");
    assert_eq!(ready["database"], "up");

    app.post_json(r#"{"name":"m","value":1}"#).await;
    eventually("the relay to publish", Duration::from_secs(10), || async {
        (testkit::metric(&app.base, "outbox_published_total").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(testkit::metric(&app.base, "outbox_broker_connected").await, 1.0);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for name in [
        "outbox_pending",
        "outbox_oldest_pending_seconds",
        "outbox_published_total",
        "outbox_dead_lettered_total",
        "outbox_lag_seconds_count",
        "outbox_broker_connected",
        "http_requests_total",
        "http_request_duration_seconds_count",
    ] {
        assert!(metrics.contains(name), "`{name}` missing from /metrics");
    }
    assert!(metrics.contains(r#"route="/api/EntityItems",status="201""#) || metrics.contains(r#"status="201""#));

    let openapi: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(openapi["paths"]["/api/EntityItems"]["post"].is_object());
    assert!(openapi["paths"]["/api/EntityItems/{id}"]["get"].is_object());
    let swagger = app.get("/swagger/").await;
    assert_eq!(swagger.status(), 200);
    assert!(swagger.text().await.unwrap().contains("swagger-ui"));
}

/// Hostile HTTP: a body far over the limit, streamed without a length, and a
/// header block of a megabyte are refused without reading them whole; the
/// sender answers normally afterwards and wrote nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_headers_are_refused_and_the_sender_goes_on() {
    let db = Postgres::shared().fresh_database().await;
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/EntityItems", app.base);

    // 64 MiB in chunks, no Content-Length: cut off at the 64 KiB limit.
    let chunks = futures::stream::iter((0..1024).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])));
    let streamed = client
        .post(&url)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(response) = streamed {
        assert_eq!(response.status(), 413, "a streamed body over the limit");
    }
    // A megabyte of headers: refused by the HTTP layer (431) or the connection closed.
    let huge = "x".repeat(1024 * 1024);
    let headers =
        client.post(&url).header("content-type", "application/json").header("x-huge", &huge).body("{}").send().await;
    if let Ok(response) = headers {
        assert!(response.status().is_client_error(), "a megabyte of headers: {}", response.status());
    }
    // Still serving, nothing written.
    assert_eq!(app.post_json(r#"{"name":"after","value":1}"#).await.status(), 201);
    assert_eq!(app.count("entity_items").await, 1);
}
