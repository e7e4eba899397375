//! The receiver against a real PostgreSQL and Artemis; messages come from an
//! independent AMQP client (python-qpid-proton).

mod helpers;

use std::{collections::HashMap, time::Duration};

use helpers::{TestReceiver, event};
use testkit::{Artemis, Postgres, eventually, peer};

#[tokio::test]
async fn a_redelivered_message_id_has_no_second_effect() {
    let broker = Artemis::shared();
    let queue = testkit::unique("q");
    let db = Postgres::shared().fresh_database().await;
    let receiver = TestReceiver::spawn(&db, broker, &queue).await;

    let first = event("m-1", "first");
    // The same message id again (as after a lost accept), even with another body.
    let again = event("m-1", "again");
    let other = event("m-2", "other");
    peer::send(broker, &queue, &[first, again, other]).await;

    eventually("all three deliveries to be settled", Duration::from_secs(20), || async {
        let seen =
            receiver.metric("receiver_processed_total").await + receiver.metric("receiver_duplicates_total").await;
        (seen == 3.0).then_some(())
    })
    .await;
    assert_eq!(receiver.metric("receiver_processed_total").await, 2.0);
    assert_eq!(receiver.metric("receiver_duplicates_total").await, 1.0);
    assert_eq!(receiver.count("inbox").await, 2);
    assert_eq!(receiver.count("entity_items").await, 2);
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM entity_items ORDER BY name")
        .fetch_all(&sqlx::PgPool::connect(&db).await.unwrap())
        .await
        .unwrap();
    assert_eq!(names, ["first", "other"], "the first copy wins; the duplicate changed nothing");
    assert_eq!(applications(&db).await, 2, "each item applied once");
    assert!(peer::drain(broker, &queue, 1).await.is_empty(), "every delivery was accepted");
}

/// Every application of an item to the projection counts: the same item
/// under a second message id (which the inbox cannot recognise) shows as
/// applied twice, so a duplicate effect can be seen in the data.
#[tokio::test]
async fn an_item_applied_again_counts_its_second_application() {
    let broker = Artemis::shared();
    let queue = testkit::unique("q");
    let db = Postgres::shared().fresh_database().await;
    let receiver = TestReceiver::spawn(&db, broker, &queue).await;
    let item = uuid::Uuid::now_v7();
    peer::send(broker, &queue, &[helpers::event_of(item, "m-1", "first"), helpers::event_of(item, "m-2", "again")])
        .await;
    eventually("both deliveries to be processed", Duration::from_secs(20), || async {
        (receiver.metric("receiver_processed_total").await == 2.0).then_some(())
    })
    .await;
    assert_eq!(receiver.count("entity_items").await, 1);
    assert_eq!(applications(&db).await, 2, "the second application is on the row");
}

/// Applications of every item, as the projection counts them.
async fn applications(db: &str) -> i64 {
    let pool = sqlx::PgPool::connect(db).await.unwrap();
    sqlx::query_scalar("SELECT coalesce(sum(applied), 0)::bigint FROM entity_items").fetch_one(&pool).await.unwrap()
}

#[tokio::test]
async fn poison_messages_end_in_the_dlq_and_the_flow_goes_on() {
    let broker = Artemis::shared();
    let queue = testkit::unique("q");
    let db = Postgres::shared().fresh_database().await;
    let receiver = TestReceiver::spawn(&db, broker, &queue).await;

    let mark = HashMap::from([("test".to_owned(), queue.clone())]);
    let poison = vec![
        peer::Outgoing {
            id: Some("p-subject".into()),
            subject: Some("Surprise".into()),
            body: "{}".into(),
            ..Default::default()
        },
        peer::Outgoing {
            id: Some("p-json".into()),
            subject: Some("EntityItemCreated".into()),
            body: "{not json".into(),
            ..Default::default()
        },
        peer::Outgoing {
            id: Some("p-map".into()),
            subject: Some("EntityItemCreated".into()),
            body_kind: Some("map".into()),
            ..Default::default()
        },
        peer::Outgoing { id: None, subject: Some("EntityItemCreated".into()), body: "{}".into(), ..Default::default() },
        peer::Outgoing {
            id: Some("p-name".into()),
            subject: Some("EntityItemCreated".into()),
            body: format!(
                r#"{{"id":"{}","name":"","value":1,"createdAt":"2026-01-01T00:00:00Z"}}"#,
                uuid::Uuid::now_v7()
            ),
            ..Default::default()
        },
    ]
    .into_iter()
    .map(|m| peer::Outgoing { properties: Some(mark.clone()), ..m })
    .collect::<Vec<_>>();
    peer::send(broker, &queue, &poison).await;
    peer::send(broker, &queue, &[event("good-1", "good")]).await;

    eventually("the good message to be stored", Duration::from_secs(20), || async {
        (receiver.metric("receiver_processed_total").await == 1.0).then_some(())
    })
    .await;
    eventually("every poison message to be rejected", Duration::from_secs(20), || async {
        (receiver.metric("receiver_rejected_total").await == 5.0).then_some(())
    })
    .await;
    assert_eq!(receiver.count("entity_items").await, 1);
    assert_eq!(receiver.count("inbox").await, 1, "a poison message leaves no inbox row");

    let dead: Vec<_> =
        peer::drain(broker, "DLQ", 2).await.into_iter().filter(|m| m.properties.get("test") == Some(&queue)).collect();
    assert_eq!(dead.len(), 5, "each poison message is in the DLQ once: {dead:?}");
    assert!(peer::drain(broker, &queue, 1).await.is_empty(), "nothing is redelivered forever");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_its_database_is_down_nothing_is_accepted_and_all_arrives_later() {
    let broker = Artemis::shared();
    let queue = testkit::unique("q");
    let pg = Postgres::start_private();
    let db = pg.fresh_database().await;
    let receiver = TestReceiver::spawn(&db, broker, &queue).await;

    pg.stop();
    let messages: Vec<_> = (0..5).map(|i| event(&format!("m-{i}"), &format!("n{i}"))).collect();
    peer::send(broker, &queue, &messages).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.metric("receiver_processed_total").await, 0.0);
    assert_eq!(receiver.metric("receiver_rejected_total").await, 0.0, "an outage is not poison");

    pg.start();
    eventually("the held messages to be stored", Duration::from_secs(30), || async {
        (receiver.metric("receiver_processed_total").await == 5.0).then_some(())
    })
    .await;
    assert_eq!(receiver.count("entity_items").await, 5);
    receiver.stop().await;
}

/// A database that cannot write for a while (read-only, SQLSTATE 25006, as
/// during a failover) is the surroundings, not the messages: the batch is
/// held and retried, never rejected to the DLQ, one by one or whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_holds_messages_instead_of_rejecting_them() {
    let broker = Artemis::shared();
    let queue = testkit::unique("q");
    let db = Postgres::shared().fresh_database().await;
    let receiver = TestReceiver::spawn(&db, broker, &queue).await;
    let name = db.rsplit('/').next().unwrap().to_owned();
    // From another database, which stays writable.
    let admin = sqlx::PgPool::connect(&format!("{}/postgres", db.rsplit_once('/').unwrap().0)).await.unwrap();
    // New sessions start read-only; the receiver's current ones are ended so it opens new ones.
    let read_only = async |on: bool| {
        let setting = if on { "SET default_transaction_read_only = on" } else { "RESET default_transaction_read_only" };
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} {setting}"))).execute(&admin).await.unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .execute(&admin)
            .await
            .unwrap();
    };
    read_only(true).await;

    let messages: Vec<_> = (0..5).map(|i| event(&format!("m-{i}"), &format!("n{i}"))).collect();
    peer::send(broker, &queue, &messages).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.metric("receiver_processed_total").await, 0.0, "nothing can be written yet");
    assert_eq!(receiver.metric("receiver_rejected_total").await, 0.0, "a read-only database is not poison");

    read_only(false).await;
    eventually("the held messages to be stored", Duration::from_secs(30), || async {
        (receiver.metric("receiver_processed_total").await == 5.0).then_some(())
    })
    .await;
    assert_eq!(receiver.count("entity_items").await, 5);
    assert_eq!(receiver.metric("receiver_rejected_total").await, 0.0, "nothing went to the DLQ");
    receiver.stop().await;
}

/// A message id PostgreSQL cannot store (a NUL character: SQLSTATE 22021)
/// fails whenever it is tried: that message alone is rejected to the DLQ,
/// and the rest of its batch is stored.
#[tokio::test]
async fn a_message_the_database_refuses_for_its_data_is_rejected_alone() {
    let broker = Artemis::shared();
    let queue = testkit::unique("q");
    let db = Postgres::shared().fresh_database().await;
    let receiver = TestReceiver::spawn(&db, broker, &queue).await;
    peer::send(broker, &queue, &[event("m-0", "before"), event("m-\u{0}-1", "nul"), event("m-2", "after")]).await;
    eventually("two stored and one rejected", Duration::from_secs(20), || async {
        let processed = receiver.metric("receiver_processed_total").await;
        let rejected = receiver.metric("receiver_rejected_total").await;
        (processed == 2.0 && rejected == 1.0).then_some(())
    })
    .await;
    assert_eq!(receiver.count("entity_items").await, 2);
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_reconnects_after_the_broker_restarts() {
    let broker = Artemis::start_private();
    let queue = testkit::unique("q");
    let db = Postgres::shared().fresh_database().await;
    let receiver = TestReceiver::spawn(&db, &broker, &queue).await;
    peer::send(&broker, &queue, &[event("before", "before")]).await;
    eventually("the first message", Duration::from_secs(20), || async {
        (receiver.metric("receiver_processed_total").await == 1.0).then_some(())
    })
    .await;

    broker.kill();
    eventually("the link loss to be noticed", Duration::from_secs(30), || async {
        (receiver.metric("receiver_broker_connected").await == 0.0).then_some(())
    })
    .await;
    broker.start();
    eventually("the receiver to reattach", Duration::from_secs(60), || async {
        (receiver.metric("receiver_broker_connected").await == 1.0).then_some(())
    })
    .await;
    peer::send(&broker, &queue, &[event("after", "after")]).await;
    eventually("the message sent after the restart", Duration::from_secs(20), || async {
        (receiver.metric("receiver_processed_total").await == 2.0).then_some(())
    })
    .await;
    receiver.stop().await;
}

/// Hostile messages: a body of 8 MiB, a body that is not JSON at all, a
/// JSON array, a map body with no message properties. Each is rejected to
/// the DLQ with a reason, and a good message after them is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_malformed_messages_are_rejected_and_the_flow_goes_on() {
    let broker = Artemis::shared();
    let queue = testkit::unique("q");
    let db = Postgres::shared().fresh_database().await;
    let receiver = TestReceiver::spawn(&db, broker, &queue).await;
    let mark = HashMap::from([("test".to_owned(), queue.clone())]);
    let huge = format!(
        r#"{{"id":"{}","name":"{}","value":1,"createdAt":"2026-01-01T00:00:00Z"}}"#,
        uuid::Uuid::now_v7(),
        "x".repeat(8 * 1024 * 1024)
    );
    let hostile = [
        peer::Outgoing {
            id: Some("h-huge".into()),
            subject: Some("EntityItemCreated".into()),
            body: huge,
            ..Default::default()
        },
        peer::Outgoing {
            id: Some("h-binary".into()),
            subject: Some("EntityItemCreated".into()),
            body: "\u{1}\u{2}\u{3}".into(),
            ..Default::default()
        },
        peer::Outgoing {
            id: Some("h-array".into()),
            subject: Some("EntityItemCreated".into()),
            body: "[1,2,3]".into(),
            ..Default::default()
        },
        peer::Outgoing { id: None, subject: None, body_kind: Some("map".into()), ..Default::default() },
    ]
    .into_iter()
    .map(|m| peer::Outgoing { properties: Some(mark.clone()), ..m })
    .collect::<Vec<_>>();
    peer::send(broker, &queue, &hostile).await;
    peer::send(broker, &queue, &[event("good-after", "good")]).await;
    eventually("the good message to be stored", Duration::from_secs(60), || async {
        (receiver.metric("receiver_processed_total").await == 1.0).then_some(())
    })
    .await;
    eventually("every hostile message to be rejected", Duration::from_secs(60), || async {
        (receiver.metric("receiver_rejected_total").await == 4.0).then_some(())
    })
    .await;
    assert_eq!(receiver.count("inbox").await, 1);
    receiver.stop().await;
}
