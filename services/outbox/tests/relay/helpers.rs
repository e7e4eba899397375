use std::time::Duration;

use outbox::{BrokerSettings, OutboxMetrics, Relay, RelaySettings, Wakeup};
use service_defaults::{Secret, metrics::Metrics};
use sqlx::PgPool;
use testkit::{Artemis, Postgres};
use uuid::Uuid;

/// A fresh database with the outbox tables, and a queue of its own.
pub struct TestOutbox {
    pub pool: PgPool,
    pub queue: String,
    pub metrics: Metrics,
    pub outbox_metrics: OutboxMetrics,
    pub wakeup: Wakeup,
}

impl TestOutbox {
    pub async fn new() -> Self {
        Self::with_queue(testkit::unique("q")).await
    }

    pub async fn with_queue(queue: String) -> Self {
        Self::on(&Postgres::shared().fresh_database().await, queue).await
    }

    /// The outbox tables in the database at `url`.
    pub async fn on(url: &str, queue: String) -> Self {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(20).connect(url).await.unwrap();
        outbox::schema::migrate(&pool).await.unwrap();
        let metrics = Metrics::new();
        let outbox_metrics = OutboxMetrics::register(&metrics);
        Self { pool, queue, metrics, outbox_metrics, wakeup: Wakeup::new() }
    }

    pub fn relay(&self, broker: &Artemis, settings: RelaySettings) -> Relay {
        let url = Secret::new(broker.amqp_url().parse().unwrap());
        let mut broker_settings = BrokerSettings::new(url, self.queue.clone());
        broker_settings.amqp.connect_timeout = Duration::from_secs(5);
        Relay::new(self.pool.clone(), broker_settings, settings, self.outbox_metrics.clone(), self.wakeup.clone())
    }

    /// Inserts `n` rows in one transaction, as a service would, and returns their ids.
    pub async fn enqueue(&self, n: usize) -> Vec<Uuid> {
        let mut tx = self.pool.begin().await.unwrap();
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let payload = format!(r#"{{"n":{i}}}"#);
            let message = outbox::NewMessage { event_type: "TestEvent", payload: &payload, traceparent: None };
            ids.push(outbox::enqueue(&mut tx, message).await.unwrap());
        }
        tx.commit().await.unwrap();
        self.wakeup.notify();
        ids
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

pub fn fast() -> RelaySettings {
    RelaySettings {
        poll_interval: Duration::from_millis(50),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        send_timeout: Duration::from_secs(5),
        ..RelaySettings::default()
    }
}
