//! The relay against a real PostgreSQL and a real Artemis, read back by an
//! independent AMQP client (python-qpid-proton).

mod helpers;

use std::{collections::HashSet, time::Duration};

use helpers::{TestOutbox, fast};
use outbox::{RelayError, RelaySettings};
use testkit::{Artemis, eventually, peer};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn messages_follow_the_wire_contract() {
    let broker = Artemis::shared();
    let outbox = TestOutbox::new().await;
    let mut tx = outbox.pool.begin().await.unwrap();
    let id = outbox::enqueue(
        &mut tx,
        outbox::NewMessage {
            event_type: "EntityItemCreated",
            payload: r#"{"name":"w","value":1.25}"#,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let mut relay = outbox.relay(broker, fast());
    let outcome = relay.try_publish_batch().await.unwrap();
    assert_eq!((outcome.claimed, outcome.accepted), (1, 1), "{outcome:?}");
    assert_eq!(outbox.count("outbox").await, 0, "an accepted row is removed");

    let got = peer::drain(broker, &outbox.queue, 2).await;
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.id.as_deref(), Some(id.to_string().as_str()));
    assert!(m.durable);
    assert_eq!(m.subject.as_deref(), Some("EntityItemCreated"));
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    assert!(!m.properties.contains_key("_AMQ_DUPL_ID"), "broker duplicate detection is off by default");
    let created = chrono::DateTime::parse_from_rfc3339(&m.properties["created_at"]).expect("RFC 3339");
    assert!((chrono::Utc::now() - created.to_utc()).num_seconds() < 600);
    let sent = chrono::DateTime::parse_from_rfc3339(&m.properties["sent_at"]).expect("sent_at, RFC 3339");
    assert!(sent >= created, "sent ({sent}) after the row was written ({created})");
    assert_eq!(
        m.properties["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "without a tracer installed the stored context travels unchanged"
    );
    assert!(m.body_is_data, "the body is an AMQP data section");
    let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
    assert_eq!(body["name"], "w");
}

/// A row sent again (its first outcome unknown to the relay) reaches the queue
/// twice, unless the relay asks Artemis to drop the copy.
#[tokio::test]
async fn a_resent_row_is_dropped_by_the_broker_only_with_broker_dedup() {
    let broker = Artemis::shared();
    for broker_dedup in [true, false] {
        let outbox = TestOutbox::new().await;
        let id = outbox.enqueue(1).await[0];
        sqlx::query("CREATE TABLE saved AS SELECT * FROM outbox").execute(&outbox.pool).await.unwrap();
        let mut relay = outbox.relay(broker, RelaySettings { broker_dedup, ..fast() });
        for send in 0..2 {
            if send == 1 {
                // As if the first Accepted had never reached the relay: the row is back.
                sqlx::query("INSERT INTO outbox SELECT * FROM saved").execute(&outbox.pool).await.unwrap();
            }
            let outcome = relay.try_publish_batch().await.unwrap();
            assert_eq!((outcome.claimed, outcome.accepted), (1, 1), "{outcome:?}");
        }
        let got = peer::drain(broker, &outbox.queue, 2).await;
        let copies = got.iter().filter(|m| m.id.as_deref() == Some(id.to_string().as_str())).count();
        let dedup_id = got.first().and_then(|m| m.properties.get("_AMQ_DUPL_ID").cloned());
        if broker_dedup {
            assert_eq!(copies, 1, "Artemis drops the copy by its _AMQ_DUPL_ID");
            assert_eq!(dedup_id, Some(id.to_string()));
        } else {
            assert_eq!(copies, 2, "without broker dedup the copy is on the wire, for the receiver to absorb");
            assert_eq!(dedup_id, None);
        }
    }
}

/// A batch's commit (the deletes of what the broker accepted) waits for the
/// WAL flush, or a synchronous standby, only with `durable_delete`: with
/// every synchronous commit held for a standby that never comes, the relay
/// still finishes a batch by default, and waits with the setting on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_deletes_wait_for_the_wal_flush_only_with_durable_delete() {
    let broker = Artemis::shared();
    let pg = testkit::Postgres::start_private();
    let url = pg.fresh_database().await;
    // testkit's servers skip synchronous commit for speed; this database asks for it, as a real one does.
    let name = url.rsplit('/').next().unwrap();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url("postgres")).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} SET synchronous_commit = on")))
        .execute(&mut admin)
        .await
        .unwrap();
    let outbox = TestOutbox::on(&url, testkit::unique("q")).await;
    outbox.enqueue(2).await;
    pg.hold_synchronous_commits().await;
    for durable_delete in [false, true] {
        let mut relay = outbox.relay(broker, RelaySettings { batch_size: 1, durable_delete, ..fast() });
        let batch = tokio::time::timeout(Duration::from_secs(3), relay.try_publish_batch()).await;
        if durable_delete {
            assert!(batch.is_err(), "with durable_delete the commit waits for the standby: {batch:?}");
        } else {
            let outcome = batch.expect("by default the commit does not wait").unwrap();
            assert_eq!((outcome.claimed, outcome.accepted), (1, 1), "{outcome:?}");
        }
    }
    pg.release_synchronous_commits().await;
    assert_eq!(peer::drain(broker, &outbox.queue, 2).await.len(), 2, "both rows were sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rows_three_relays_each_message_once() {
    const ROWS: usize = 10_000;
    let broker = Artemis::shared();
    let outbox = TestOutbox::new().await;
    let ids: HashSet<String> = outbox.enqueue(ROWS).await.iter().map(|id| id.to_string()).collect();

    let cancel = CancellationToken::new();
    let settings = RelaySettings { batch_size: 200, max_in_flight: 100, ..fast() };
    let relays: Vec<_> =
        (0..3).map(|_| tokio::spawn(outbox.relay(broker, settings.clone()).run(cancel.clone()))).collect();
    eventually("the outbox to drain", Duration::from_secs(180), || async {
        (outbox.count("outbox").await == 0).then_some(())
    })
    .await;
    cancel.cancel();
    for relay in relays {
        relay.await.unwrap();
    }

    assert_eq!(
        outbox.outbox_metrics.published.get(),
        ROWS as u64,
        "three relays never send the same row twice in normal operation"
    );
    let got = peer::drain(broker, &outbox.queue, 3).await;
    let received: Vec<String> = got.into_iter().map(|m| m.id.unwrap()).collect();
    let unique: HashSet<String> = received.iter().cloned().collect();
    assert_eq!(received.len(), unique.len(), "a message_id arrived twice");
    assert_eq!(unique, ids, "every row arrives, none lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_drain_loses_nothing() {
    const ROWS: usize = 5_000;
    let broker = Artemis::start_private();
    let outbox = TestOutbox::new().await;
    let ids: HashSet<String> = outbox.enqueue(ROWS).await.iter().map(|id| id.to_string()).collect();

    let cancel = CancellationToken::new();
    // Small batches so the kill lands while rows are still pending.
    let settings = RelaySettings { batch_size: 50, max_in_flight: 50, ..fast() };
    let relay = tokio::spawn(outbox.relay(&broker, settings).run(cancel.clone()));
    eventually("the relay to publish some rows", Duration::from_secs(60), || async {
        (outbox.outbox_metrics.published.get() >= 500).then_some(())
    })
    .await;
    broker.kill();
    let pending_at_kill = outbox.count("outbox").await;
    assert!(pending_at_kill > 0, "the kill must land mid-drain");
    eventually("the relay to notice the broker is gone", Duration::from_secs(30), || async {
        (outbox.outbox_metrics.broker_connected.get() == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.start();

    eventually("the outbox to drain after the restart", Duration::from_secs(120), || async {
        (outbox.count("outbox").await == 0).then_some(())
    })
    .await;
    cancel.cancel();
    relay.await.unwrap();

    let got = peer::drain(&broker, &outbox.queue, 3).await;
    let received: HashSet<String> = got.iter().filter_map(|m| m.id.clone()).collect();
    let missing = ids.difference(&received).count();
    assert_eq!(missing, 0, "{missing} acknowledged rows never reached the queue");
    eprintln!("broker kill: {pending_at_kill} rows pending at the kill, {} deliveries for {} rows", got.len(), ROWS);
}

#[tokio::test]
async fn refused_rows_back_off_then_dead_letter() {
    let broker = Artemis::shared();
    // Test brokers hold one message under `full.` and then refuse (Rejected).
    let outbox = TestOutbox::with_queue(testkit::unique("full.q")).await;
    outbox.enqueue(5).await;
    let settings = RelaySettings {
        max_attempts: 2,
        retry_base: Duration::from_millis(10),
        retry_max: Duration::from_millis(20),
        ..fast()
    };
    let mut relay = outbox.relay(broker, settings);
    let first = relay.try_publish_batch().await.unwrap();
    assert_eq!(first.claimed, 5);
    assert!(first.refused >= 4, "the full address refuses: {first:?}");
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM outbox").fetch_all(&outbox.pool).await.unwrap();
    assert!(attempts.iter().all(|&a| a == 1), "each refused row counts an attempt: {attempts:?}");
    let next: bool = sqlx::query_scalar("SELECT bool_and(next_attempt_at > created_at) FROM outbox")
        .fetch_one(&outbox.pool)
        .await
        .unwrap();
    assert!(next, "refused rows wait before the next try");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while outbox.count("outbox").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "refused rows never reached the dead-letter table");
        relay.try_publish_batch().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = outbox.count("outbox_dead_letter").await;
    assert_eq!(dead, 5 - first.accepted as i64);
    assert_eq!(outbox.outbox_metrics.dead_lettered.get(), dead as u64);
    let reason: String =
        sqlx::query_scalar("SELECT last_error FROM outbox_dead_letter LIMIT 1").fetch_one(&outbox.pool).await.unwrap();
    assert!(reason.starts_with("rejected"), "the broker's reason is kept: {reason}");
    assert!(outbox.metrics.render().contains("outbox_publish_failures_total{outcome=\"rejected\"}"));
}

#[tokio::test]
async fn an_unreachable_broker_leaves_rows_pending() {
    let outbox = TestOutbox::new().await;
    outbox.enqueue(3).await;
    let url = format!("amqp://u:p@127.0.0.1:{}", testkit::free_port());
    let mut settings =
        outbox::BrokerSettings::new(service_defaults::Secret::new(url.parse().unwrap()), outbox.queue.clone());
    settings.amqp.connect_timeout = Duration::from_secs(2);
    let mut relay =
        outbox::Relay::new(outbox.pool.clone(), settings, fast(), outbox.outbox_metrics.clone(), outbox.wakeup.clone());
    let err = relay.try_publish_batch().await.unwrap_err();
    assert!(matches!(err, RelayError::Connect(_)), "{err}");
    assert!(!err.to_string().contains(":p@"), "no password in errors: {err}");
    assert_eq!(outbox.count("outbox").await, 3);
    let attempts: i64 = sqlx::query_scalar("SELECT sum(attempts) FROM outbox").fetch_one(&outbox.pool).await.unwrap();
    assert_eq!(attempts, 0, "an outage is not the message's fault: no attempt counted");
}

/// The outbox is a queue: autovacuum may analyze it nearly empty and leave
/// `reltuples` at 0 while a backlog grows behind it. The relay's claim must
/// still read about one batch (not every due row, then sort), and its delete
/// read no index at all: on the bench those two plans, flipped, took the
/// sender's database to 120 % CPU until the next autovacuum.
#[tokio::test]
async fn the_claim_and_delete_keep_their_plans_when_statistics_say_the_outbox_is_empty() {
    let outbox = TestOutbox::new().await;
    // Rows written over time, each due when written.
    let enqueue = |n: i32| {
        sqlx::query(
            "INSERT INTO outbox (id, event_type, payload, next_attempt_at)
             SELECT gen_random_uuid(), 'TestEvent', '{}', clock_timestamp() FROM generate_series(1, $1)",
        )
        .bind(n)
        .execute(&outbox.pool)
    };
    let analyze = || sqlx::query("ANALYZE outbox").execute(&outbox.pool);
    // An analyze sees the rows of one write (one `next_attempt_at`); a backlog
    // is drained, leaving the table and its indexes full of dead rows; the
    // next analyze finds nothing live (`reltuples` 0); a backlog grows again.
    sqlx::query("INSERT INTO outbox (id, event_type, payload) SELECT gen_random_uuid(), 'TestEvent', '{}' FROM generate_series(1, 20000)")
        .execute(&outbox.pool)
        .await
        .unwrap();
    analyze().await.unwrap();
    enqueue(200_000).await.unwrap();
    sqlx::query("DELETE FROM outbox").execute(&outbox.pool).await.unwrap();
    analyze().await.unwrap();
    enqueue(50_000).await.unwrap();
    let batch: i64 = 256;

    let mut tx = outbox.pool.begin_with(outbox::relay::BEGIN).await.unwrap();
    let claim = explain(sqlx::query(analyzed(outbox::relay::CLAIM)).bind(batch), &mut tx).await;
    let read = plan_nodes(&claim).iter().map(|n| n["Actual Rows"].as_i64().unwrap_or(0)).max().unwrap_or(0);
    assert!(read <= batch, "the claim read {read} rows for a batch of {batch}: {claim:#}");

    let ctids: Vec<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT ctid FROM ({}) c", outbox::relay::CLAIM)))
            .bind(batch)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    let delete = explain(sqlx::query(analyzed(outbox::relay::DELETE_ACCEPTED)).bind(&ctids), &mut tx).await;
    let nodes = plan_nodes(&delete);
    assert!(nodes.iter().all(|n| n.get("Index Name").is_none()), "the delete read an index: {delete:#}");
    let scan = nodes.iter().find(|n| n["Node Type"] == "Tid Scan").unwrap_or_else(|| panic!("{delete:#}"));
    assert_eq!(scan["Actual Rows"], batch, "the delete read the rows claimed, no others");
    tx.rollback().await.unwrap();
}

fn analyzed(statement: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("EXPLAIN (ANALYZE, FORMAT JSON) {statement}"))
}

/// The plan `query` (an `EXPLAIN (FORMAT JSON)`) gives, as JSON.
async fn explain(
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    tx: &mut sqlx::PgConnection,
) -> serde_json::Value {
    use sqlx::Row;
    let row = query.fetch_one(tx).await.unwrap();
    // The `json` column is its text on the wire; sqlx's `json` feature is not on.
    serde_json::from_str(&row.try_get_unchecked::<String, _>(0).unwrap()).unwrap()
}

/// Every node of an `EXPLAIN (FORMAT JSON)` answer.
fn plan_nodes(explain: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut nodes = vec![&explain[0]["Plan"]];
    let mut i = 0;
    while i < nodes.len() {
        if let Some(children) = nodes[i]["Plans"].as_array() {
            nodes.extend(children);
        }
        i += 1;
    }
    nodes
}
