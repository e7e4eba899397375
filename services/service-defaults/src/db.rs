//! PostgreSQL pools that fail fast and heal by themselves.
//!
//! A request must never hang on a dead database: the pool's acquire timeout
//! bounds the wait, and [`is_transient`] tells a passing outage (answer 503,
//! retry later) from a fault in the data (answer 4xx/5xx, give up).

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::config::ConnectionString;

#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a caller waits for a connection before giving up.
    pub acquire_timeout: Duration,
    pub application_name: String,
}

impl PoolSettings {
    pub fn new(application_name: &str) -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
            application_name: application_name.to_owned(),
        }
    }
}

/// A pooled connection idle for longer than this is pinged before it is
/// handed out. sqlx pings every connection as it returns to the pool, so one
/// idle for less was found alive moments ago; one lost with the server in
/// between fails the one query that finds it, which callers treat as
/// transient (503, retry).
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// A pool that opens connections on demand, so a service starts while its database is down.
pub fn lazy_pool(cs: &ConnectionString, settings: &PoolSettings) -> Result<PgPool, sqlx::Error> {
    let options = cs.url.expose().as_str().parse::<PgConnectOptions>()?.application_name(&settings.application_name);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        // A connection that died with the server is found before it is handed
        // out; one used moments ago is handed out without a round trip of its
        // own, so a busy pool pays no ping per request.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_WHEN_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// Waits until the database answers, logging each failed try; `Err` on cancellation.
pub async fn wait_until_reachable(
    pool: &PgPool,
    cs: &ConnectionString,
    cancel: &CancellationToken,
) -> Result<(), Cancelled> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0u32;
    loop {
        match sqlx::query("SELECT 1").execute(pool).await {
            Ok(_) => return Ok(()),
            Err(err) => {
                attempt += 1;
                if attempt == 1 || attempt.is_multiple_of(10) {
                    tracing::warn!(
                        database = %cs.name, url = %cs.masked(), error = %err, attempt,
                        "waiting for the database to answer"
                    );
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cancelled while waiting for the database")]
pub struct Cancelled;

/// True when the error says the database is unreachable, busy or unable to
/// write right now, not that the statement or its data is wrong: retrying
/// later can succeed.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception, 53: insufficient resources, 57P: operator
            // intervention (shutdown, restart), 57014: statement cancelled (a timeout,
            // an operator), 25006: read-only (a standby, a failover in progress),
            // 58: system error (I/O), 40001/40P01: serialization, deadlock.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code.starts_with("58")
                || code == "57014"
                || code == "25006"
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// True only when the error is about the data sent (SQLSTATE class 22, data
/// exception, or 23, integrity constraint violation): the same statement with
/// the same data fails again whenever it is tried. Everything else (an
/// outage, a full disk, a missing table, a bug) is about the surroundings.
pub fn is_about_the_data(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        _ => false,
    }
}
