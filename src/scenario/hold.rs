//! Crashes that land at a known point of the receiver's batch, arranged
//! from its database so any receiver can be struck there, unchanged:
//!
//! - [`When::CommitHeld`]: its commit is durable but has not answered, so
//!   nothing is accepted yet. PostgreSQL waits for a synchronous standby
//!   that does not exist (`synchronous_standby_names`) after writing the
//!   commit locally; the receiver is killed while it waits, then the wait is
//!   lifted. The broker must redeliver the batch, and only deduplication
//!   keeps it from a second effect.
//! - [`When::StoreBlocked`]: it is inside its transaction, before commit.
//!   A lock on `inbox` stops its insert; the receiver is killed while it
//!   waits, then the lock goes. Nothing was stored, so only a receiver that
//!   accepted before committing loses the batch.
//!
//! The database is given back in every case, also when the step fails.

use std::time::{Duration, Instant};

use sqlx::{PgPool, Postgres, Transaction};

use super::{Ctx, demo, steps::When};

/// The receiver's database, holding the receiver at a point of its batch.
pub(super) struct Held {
    pool: PgPool,
    lock: Option<Transaction<'static, Postgres>>,
    standby: bool,
}

/// A standby name no server has: commits wait for it until it is reset.
const NO_STANDBY: &str = "apphost_scenario_hold";

impl Held {
    /// Lets the database go on: the held commits finish, the lock is released.
    pub(super) async fn release(self) -> Result<(), String> {
        if let Some(tx) = self.lock {
            tx.rollback().await.map_err(|e| format!("releasing the lock on `inbox`: {e}"))?;
        }
        if self.standby {
            standby(&self.pool, "RESET synchronous_standby_names").await.map_err(|e| {
                format!(
                    "resetting synchronous_standby_names on the receiver's database: {e}; \
                     its commits wait until you run `ALTER SYSTEM RESET synchronous_standby_names; \
                     SELECT pg_reload_conf()`"
                )
            })?;
        }
        self.pool.close().await;
        Ok(())
    }
}

/// `ALTER SYSTEM {change}`, then a reload so sessions see it (two statements:
/// ALTER SYSTEM cannot run in the implicit transaction of a multi-statement query).
async fn standby(pool: &PgPool, change: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER SYSTEM {change}"))).execute(pool).await?;
    sqlx::query("SELECT pg_reload_conf()").execute(pool).await?;
    Ok(())
}

impl Ctx {
    /// Holds the receiver's database at `when`, bursting writes until a
    /// receiver's statement waits there. Returns the hold, how the receiver
    /// was caught and the burst's acknowledged ids.
    pub(super) async fn hold_receiver(&self, target: &str, when: When) -> Result<(Held, String, Vec<String>), String> {
        if target != self.roles.receiver {
            return Err(format!(
                "`{}` strikes the receiver (`{}`) through its database; `{target}` is not it",
                when.as_str(),
                self.roles.receiver
            ));
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.roles.receiver_db_url)
            .await
            .map_err(|e| format!("connecting to the receiver's database: {e}"))?;
        let held = match when {
            When::CommitHeld => {
                standby(&pool, &format!("SET synchronous_standby_names = '{NO_STANDBY}'"))
                    .await
                    .map_err(|e| format!("holding the receiver's commits (needs a superuser role): {e}"))?;
                Held { pool, lock: None, standby: true }
            }
            When::StoreBlocked => {
                let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
                // Blocks inserts and updates; reads (the receiver's API) go on.
                sqlx::query("LOCK TABLE inbox IN EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| format!("locking the receiver's `inbox`: {e}"))?;
                Held { pool, lock: Some(tx), standby: false }
            }
            When::Now | When::BatchInFlight => unreachable!("not a database hold"),
        };
        match self.burst_until_waiting(&held.pool, when).await {
            Ok((waiting, burst)) => {
                let how = match when {
                    When::CommitHeld => format!("with {waiting} commit(s) durable but not yet answered"),
                    _ => format!("with {waiting} transaction(s) not yet committed"),
                };
                Ok((held, how, burst))
            }
            Err(e) => {
                held.release().await?;
                Err(e)
            }
        }
    }

    /// Posts bursts until a session of the receiver waits at the hold.
    async fn burst_until_waiting(&self, pool: &PgPool, when: When) -> Result<(i64, Vec<String>), String> {
        let waiting_sql = match when {
            When::CommitHeld => "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
            _ => {
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND datname = current_database() AND pid <> pg_backend_pid()"
            }
        };
        let sender = self.url(&self.roles.sender)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut acknowledged = Vec::new();
        loop {
            let burst = (0..50).map(|i| demo::post_item(&self.client, &sender, format!("held {i}"), i));
            acknowledged.extend(futures::future::join_all(burst).await.into_iter().flatten().flatten());
            for _ in 0..50 {
                let waiting: i64 = sqlx::query_scalar(waiting_sql).fetch_one(pool).await.map_err(|e| e.to_string())?;
                if waiting > 0 {
                    return Ok((waiting, acknowledged));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if Instant::now() > deadline {
                return Err(format!("the receiver never reached its {} within 60s", when.as_str()));
            }
        }
    }
}
