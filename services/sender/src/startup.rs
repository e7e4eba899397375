//! Building and running the sender: pool, migrations, relays, HTTP server.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use outbox::{OutboxMetrics, Relay, Wakeup};
use service_defaults::{
    config::ProcessEnv,
    db::{self, PoolSettings},
    metrics::Metrics,
    shutdown, telemetry,
};
use sqlx::PgPool;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{Settings, routes};

pub struct Application {
    listener: TcpListener,
    port: u16,
    settings: Settings,
    pool: PgPool,
    metrics: Metrics,
    outbox_metrics: OutboxMetrics,
}

impl Application {
    /// Binds the port and prepares the pool; touches neither database nor broker yet.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = service_defaults::http::bind(settings.host, settings.port).await?;
        let port = listener.local_addr()?.port();
        let pool = open_pool(&settings, settings.pool_size, "sender")?;
        let metrics = Metrics::new();
        let outbox_metrics = OutboxMetrics::register(&metrics);
        Ok(Self { listener, port, settings, pool, metrics, outbox_metrics })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Waits for the database, migrates, then serves and relays until `cancel`.
    /// On cancel, in-flight requests finish and each relay finishes its batch.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let Self { listener, port, settings, pool, metrics, outbox_metrics } = self;
        if db::wait_until_reachable(&pool, &settings.database, &cancel).await.is_err() {
            return Ok(());
        }
        outbox::schema::migrate(&pool).await.context("migrating the outbox tables")?;
        sqlx::migrate!("./migrations").run(&pool).await.context("migrating the sender's tables")?;

        let wakeup = Wakeup::new();
        let background = cancel.child_token();
        let mut workers = JoinSet::new();
        // The relays and the backlog gauge have connections of their own: in a
        // pool shared with the HTTP handlers a flood of POSTs queued them behind
        // requests, and the outbox grew without end (apphost bench, 1259 POST/s).
        let relays = u32::try_from(settings.relays).unwrap_or(u32::MAX).saturating_add(1);
        let relay_pool = open_pool(&settings, relays, "sender-relay")?;
        for n in 0..settings.relays {
            let mut broker = settings.broker.clone();
            broker.amqp.container_id = format!("{}-{n}", broker.amqp.container_id);
            let relay =
                Relay::new(relay_pool.clone(), broker, settings.relay.clone(), outbox_metrics.clone(), wakeup.clone());
            // The first follows the commits; the others join while there is a backlog.
            let relay = if n == 0 { relay } else { relay.joining_on_backlog() };
            workers.spawn(relay.run(background.clone()));
        }
        workers.spawn(outbox::relay::watch_backlog(
            relay_pool.clone(),
            outbox_metrics.clone(),
            Duration::from_secs(1),
            background.clone(),
        ));

        workers.spawn(crate::idempotency::forget_expired(
            pool.clone(),
            settings.idempotency_retention,
            background.clone(),
        ));
        // Readiness asks the database on a connection of its own, so that requests
        // queueing for every request connection (overload) do not read as an outage.
        let health_pool = open_pool(&settings, 1, "sender-health")?;
        let writes = db::Connections::lazy(
            &settings.database,
            &pool_settings(&settings, u32::try_from(settings.writers).unwrap_or(u32::MAX), "sender"),
        )
        .context(INVALID_URL)?;
        let state = routes::AppState {
            pool: pool.clone(),
            writes: crate::writes::Writes::start(
                writes.clone(),
                settings.writers,
                settings.write_batch,
                settings.db_acquire_timeout,
            ),
            wakeup,
            retention: settings.idempotency_retention,
        };
        let ready = routes::readiness(health_pool.clone(), outbox_metrics);
        let router = routes::router(state, &metrics, ready, settings.max_in_flight_requests);
        let relay = &settings.relay;
        tracing::info!(
            port,
            broker = %settings.broker.masked_url(),
            address = %settings.broker.address,
            relays = settings.relays,
            batch_size = relay.batch_size,
            max_in_flight = relay.max_in_flight,
            poll_interval = ?relay.poll_interval,
            broker_dedup = relay.broker_dedup,
            durable_delete = relay.durable_delete,
            pool_size = settings.pool_size,
            writers = settings.writers,
            write_batch = settings.write_batch,
            max_in_flight_requests = settings.max_in_flight_requests,
            runtime_workers = tokio::runtime::Handle::current().metrics().num_workers(),
            "sender listening"
        );
        let served = service_defaults::http::serve(listener, router, cancel.clone()).await;
        background.cancel();
        while workers.join_next().await.is_some() {}
        relay_pool.close().await;
        health_pool.close().await;
        pool.close().await;
        writes.close().await;
        served.context("serving HTTP")
    }
}

/// The binary's whole life: configure, run, report. Exit 2 on bad configuration.
pub async fn main() -> ExitCode {
    let telemetry = match telemetry::init("sender") {
        Ok(t) => t,
        Err(err) => {
            eprintln!("sender: {err}");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::from_env(&ProcessEnv) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("sender: {err}");
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
            tracing::error!(error = ?err, "sender stopped with an error");
            eprintln!("sender: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A lazy pool of `size` connections to the sender's database, named `name` in `pg_stat_activity`.
fn open_pool(settings: &Settings, size: u32, name: &str) -> anyhow::Result<PgPool> {
    db::lazy_pool(&settings.database, &pool_settings(settings, size, name)).context(INVALID_URL)
}

const INVALID_URL: &str = "the `sender-db` connection string is not a valid PostgreSQL URL";

/// `size` connections named `name` in `pg_stat_activity`, waited for at most `DB_ACQUIRE_TIMEOUT`.
fn pool_settings(settings: &Settings, size: u32, name: &str) -> PoolSettings {
    PoolSettings { max_connections: size, acquire_timeout: settings.db_acquire_timeout, ..PoolSettings::new(name) }
}
