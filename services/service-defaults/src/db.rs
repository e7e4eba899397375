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
    let options = connect_options(cs, settings)?;
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

/// `cs` as sqlx's connect options, named `settings.application_name` in `pg_stat_activity`.
fn connect_options(cs: &ConnectionString, settings: &PoolSettings) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(cs.url.expose().as_str().parse::<PgConnectOptions>()?.application_name(&settings.application_name))
}

/// A pool whose connections go back without a round trip of their own.
///
/// sqlx's pool pings every connection it takes back (`return_to_pool`), so
/// each request it serves costs the database a second round trip, and holds
/// the connection through it. The bench's closed loop of `POST`s gave 3,708
/// and 3,735 req/s with it, 5,204 and 5,356 with the ping switched off in a
/// patched sqlx (alternated), and 6,379 on this pool (`apphost bench --only
/// closed,open --rates 480,2800`, the medians of 3 runs). This one takes a connection
/// back as it is, pings one idle for longer than [`PING_WHEN_IDLE_FOR`] as
/// [`lazy_pool`] does, and closes one whose error ended its session
/// ([`Conn::give_back`]). Kept for the one-statement writes, which are
/// never left inside a transaction: a transaction dropped half way would keep
/// its locks here until the connection's next use sends its `ROLLBACK`.
#[derive(Clone)]
pub struct Connections {
    pool: deadpool::managed::Pool<Opener>,
}

/// Opens and checks the connections of [`Connections`].
struct Opener {
    options: PgConnectOptions,
}

impl deadpool::managed::Manager for Opener {
    type Type = sqlx::PgConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<sqlx::PgConnection, sqlx::Error> {
        sqlx::PgConnection::connect_with(&self.options).await
    }

    async fn recycle(
        &self,
        conn: &mut sqlx::PgConnection,
        metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<sqlx::Error> {
        if metrics.last_used() > PING_WHEN_IDLE_FOR {
            conn.ping().await?;
        }
        Ok(())
    }
}

/// A connection of [`Connections`]; dropped, it goes back as it is.
pub struct Conn(deadpool::managed::Object<Opener>);

impl std::ops::Deref for Conn {
    type Target = sqlx::PgConnection;
    fn deref(&self) -> &sqlx::PgConnection {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
        &mut self.0
    }
}

impl Conn {
    /// Hands the connection back after `outcome`, or closes it unless the
    /// error ended only the statement (a database error of severity ERROR):
    /// after a lost socket, a protocol fault or a FATAL one (the server's
    /// shutdown, `pg_terminate_backend`) the next request gets a fresh one.
    pub fn give_back<T>(self, outcome: &Result<T, sqlx::Error>) {
        if let Err(err) = outcome
            && !ends_only_the_statement(err)
        {
            drop(deadpool::managed::Object::take(self.0));
        }
    }
}

/// A database error after which its session goes on: severity ERROR, not FATAL or PANIC.
pub fn ends_only_the_statement(err: &sqlx::Error) -> bool {
    use sqlx::postgres::{PgDatabaseError, PgSeverity};
    err.as_database_error()
        .and_then(|db| db.try_downcast_ref::<PgDatabaseError>())
        .is_some_and(|db| db.severity() == PgSeverity::Error)
}

impl Connections {
    /// Opens connections on demand, at most `settings.max_connections`; a
    /// caller waits at most `settings.acquire_timeout` for one.
    pub fn lazy(cs: &ConnectionString, settings: &PoolSettings) -> Result<Self, sqlx::Error> {
        let wait = Some(settings.acquire_timeout);
        let pool = deadpool::managed::Pool::builder(Opener { options: connect_options(cs, settings)? })
            .max_size(settings.max_connections as usize)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(wait)
            .create_timeout(wait)
            .recycle_timeout(wait)
            .build()
            .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))?;
        Ok(Self { pool })
    }

    /// A connection, or the error sqlx's pool gives in the same case (a
    /// timeout is [`sqlx::Error::PoolTimedOut`]).
    pub async fn get(&self) -> Result<Conn, sqlx::Error> {
        use deadpool::managed::PoolError;
        self.pool.get().await.map(Conn).map_err(|err| match err {
            PoolError::Backend(err) => err,
            PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
            PoolError::Closed => sqlx::Error::PoolClosed,
            other => sqlx::Error::Configuration(other.to_string().into()),
        })
    }

    /// Closes the idle connections politely and refuses new requests.
    pub async fn close(&self) {
        let idle = self.pool.retain(|_, _| false).removed;
        self.pool.close();
        for conn in idle {
            let _ = conn.close().await;
        }
    }
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
