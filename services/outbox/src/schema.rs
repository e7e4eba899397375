//! The outbox tables, migrated with their own history table so that the
//! service's migrations and these never collide.

use sqlx::PgPool;

/// Creates or upgrades the outbox tables. Safe to run from many replicas at
/// once: migrations take an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_outbox_migrations");
    migrator.run(pool).await
}
