use std::{collections::HashMap, time::Duration};

use sender::{Application, Settings};
use sqlx::PgPool;
use testkit::eventually;
use tokio_util::sync::CancellationToken;

/// A sender running in this process on a free port, against a real database and broker.
pub struct TestApp {
    pub base: String,
    pub db: PgPool,
    pub client: reqwest::Client,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn env(db_url: &str, broker_url: &str, queue: &str) -> HashMap<String, String> {
    [
        ("ConnectionStrings__sender-db", db_url),
        ("ConnectionStrings__broker", broker_url),
        ("PORT", "0"),
        ("HOST", "127.0.0.1"),
        ("OUTBOX_ADDRESS", queue),
        ("OUTBOX_POLL_INTERVAL", "50ms"),
        ("DB_ACQUIRE_TIMEOUT", "1s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A broker URL where nothing listens: the relay can never connect.
pub fn dead_broker() -> String {
    format!("amqp://user:secret@127.0.0.1:{}", testkit::free_port())
}

impl TestApp {
    pub async fn spawn(db_url: &str, broker_url: &str, queue: &str) -> Self {
        Self::spawn_with(env(db_url, broker_url, queue)).await
    }

    pub async fn spawn_with(env: HashMap<String, String>) -> Self {
        let settings = Settings::from_env(&env).expect("valid test settings");
        let app = Application::build(settings).await.expect("building the sender");
        let base = format!("http://127.0.0.1:{}", app.port());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(cancel.clone()));
        let db = PgPool::connect(&env["ConnectionStrings__sender-db"]).await.unwrap();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        let ready = format!("{base}/health/ready");
        eventually("the sender to become ready", Duration::from_secs(30), || async {
            let r = client.get(&ready).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        Self { base, db, client, cancel, task: Some(task) }
    }

    pub async fn post_json(&self, body: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/api/EntityItems", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST")
    }

    /// A POST with an `Idempotency-Key`.
    pub async fn post_keyed(&self, key: &str, body: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/api/EntityItems", self.base))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_owned())
            .send()
            .await
            .expect("POST")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.base)).send().await.expect("GET")
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// A POST held inside the app: `entity_items` is locked by the returned
    /// transaction, and the POST (spawned) waits for the lock, holding its
    /// request connection, until the transaction ends.
    pub async fn post_held_by_a_lock(
        &self,
    ) -> (sqlx::Transaction<'static, sqlx::Postgres>, tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>) {
        let mut lock = self.db.begin().await.unwrap();
        sqlx::query("LOCK TABLE entity_items IN EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
        let request = self
            .client
            .post(format!("{}/api/EntityItems", self.base))
            .header("content-type", "application/json")
            .body(r#"{"name":"stuck","value":1}"#);
        let stuck = tokio::spawn(async move { request.send().await });
        eventually("the POST to wait for the lock, holding its connection", Duration::from_secs(20), || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
            )
            .fetch_one(&self.db)
            .await
            .ok()?;
            (waiting > 0).then_some(())
        })
        .await;
        (lock, stuck)
    }

    /// Stops the app as SIGTERM would and waits for it.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
