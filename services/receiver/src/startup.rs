//! Building and running the receiver: pool, migrations, consumer, HTTP server.

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use service_defaults::{
    amqp::AmqpSettings,
    config::ProcessEnv,
    db::{self, PoolSettings},
    http,
    metrics::Metrics,
    shutdown, telemetry,
};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    Settings,
    consumer::{Consumer, ConsumerSettings},
    metrics::ReceiverMetrics,
};

pub struct Application {
    listener: TcpListener,
    port: u16,
    settings: Settings,
    pool: PgPool,
}

impl Application {
    /// Binds the port and prepares the pool; touches neither database nor broker yet.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = http::bind(settings.host, settings.port).await?;
        let port = listener.local_addr()?.port();
        let pool = db::lazy_pool(
            &settings.database,
            &PoolSettings { max_connections: settings.pool_size, ..PoolSettings::new("receiver") },
        )
        .context("the `receiver-db` connection string is not a valid PostgreSQL URL")?;
        Ok(Self { listener, port, settings, pool })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits for the database, migrates, then consumes and serves until `cancel`.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let Self { listener, port, settings, pool } = self;
        if db::wait_until_reachable(&pool, &settings.database, &cancel).await.is_err() {
            return Ok(());
        }
        sqlx::migrate!("./migrations").run(&pool).await.context("migrating the receiver's tables")?;

        let metrics = Metrics::new();
        let receiver_metrics = ReceiverMetrics::register(&metrics);
        let mut amqp = AmqpSettings::new(settings.broker.clone(), "receiver");
        amqp.idle_timeout = settings.idle_timeout;
        let consumer = Consumer::new(
            ConsumerSettings {
                amqp,
                address: settings.address.clone(),
                credit: settings.credit,
                batch_size: settings.batch_size,
                batch_wait: settings.batch_wait,
            },
            pool.clone(),
            receiver_metrics.clone(),
        );
        let background = cancel.child_token();
        let consuming = tokio::spawn(consumer.run(background.clone()));

        let router = Router::new()
            .merge(entity_items::api::read_routes(pool.clone()))
            .merge(http::health_routes(metrics.clone(), readiness(pool.clone(), receiver_metrics)))
            .fallback(http::not_found);
        let router = http::observed(router, &metrics);
        tracing::info!(
            port,
            broker = %settings.masked_broker,
            address = %settings.address,
            credit = settings.credit,
            batch_size = settings.batch_size,
            batch_wait = ?settings.batch_wait,
            pool_size = settings.pool_size,
            runtime_workers = tokio::runtime::Handle::current().metrics().num_workers(),
            "receiver listening"
        );
        let served = http::serve(listener, router, cancel.clone()).await;
        background.cancel();
        let _ = consuming.await;
        pool.close().await;
        served.context("serving HTTP")
    }
}

/// Ready while the database answers; the body also shows the broker link.
fn readiness(pool: PgPool, metrics: ReceiverMetrics) -> http::ReadinessCheck {
    Arc::new(move || {
        let pool = pool.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            let db = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&pool)).await;
            let (ready, database) = match db {
                Ok(Ok(_)) => (true, "up".to_owned()),
                Ok(Err(e)) => (false, format!("down: {e}")),
                Err(_) => (false, "down: no answer within 2s".to_owned()),
            };
            let connected = metrics.broker_connected.get() > 0;
            http::Readiness {
                ready,
                details: serde_json::json!({
                    "database": database,
                    "broker": if connected { "connected" } else { "disconnected" },
                }),
            }
        })
    })
}

/// The binary's whole life: configure, run, report. Exit 2 on bad configuration.
pub async fn main() -> ExitCode {
    let telemetry = match telemetry::init("receiver") {
        Ok(t) => t,
        Err(err) => {
            eprintln!("receiver: {err}");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::from_env(&ProcessEnv) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("receiver: {err}");
            telemetry.shutdown();
            return ExitCode::from(2);
        }
    };
    let cancel = shutdown::on_signal();
    let result = match Application::build(settings).await {
        Ok(app) => app.run_until_stopped(cancel).await,
        Err(err) => Err(err),
    };
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("receiver: {err:#}");
            ExitCode::FAILURE
        }
    }
}
