use std::{collections::HashMap, time::Duration};

use receiver::{Application, Settings};
use sqlx::PgPool;
use testkit::{Artemis, eventually, peer::Outgoing};
use tokio_util::sync::CancellationToken;

/// A receiver running in this process against a real database and broker.
pub struct TestReceiver {
    pub base: String,
    pub db_url: String,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestReceiver {
    pub async fn spawn(db_url: &str, broker: &Artemis, queue: &str) -> Self {
        let env: HashMap<String, String> = [
            ("ConnectionStrings__receiver-db", db_url),
            ("ConnectionStrings__broker", &broker.amqp_url()),
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
            ("RECEIVER_ADDRESS", queue),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let app = Application::build(Settings::from_env(&env).unwrap()).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(cancel.clone()));
        let this = Self { base, db_url: db_url.to_owned(), cancel, task: Some(task) };
        eventually("the receiver to attach", Duration::from_secs(30), || async {
            let ok = reqwest::get(format!("{}/health/ready", this.base)).await.ok()?.status().is_success();
            (ok && this.metric("receiver_broker_connected").await == 1.0).then_some(())
        })
        .await;
        this
    }

    pub async fn metric(&self, series: &str) -> f64 {
        testkit::metric(&self.base, series).await
    }

    /// A fresh pool each time: the database may have restarted in between.
    pub async fn count(&self, table: &str) -> i64 {
        let pool = PgPool::connect(&self.db_url).await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&pool).await.unwrap()
    }

    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A well-formed `EntityItemCreated` message with a fresh item.
pub fn event(message_id: &str, name: &str) -> Outgoing {
    event_of(uuid::Uuid::now_v7(), message_id, name)
}

/// The event of item `item` under `message_id`.
pub fn event_of(item: uuid::Uuid, message_id: &str, name: &str) -> Outgoing {
    let body =
        format!(r#"{{"id":"{item}","name":"{name}","value":12.50,"createdAt":"{}"}}"#, chrono::Utc::now().to_rfc3339());
    Outgoing { id: Some(message_id.to_owned()), subject: Some("EntityItemCreated".into()), body, ..Default::default() }
}
