//! The write side: an outbox row inserted in the caller's transaction.

use std::sync::Arc;

use sqlx::PgConnection;
use tokio::sync::Notify;
use uuid::Uuid;

/// An event to publish once the surrounding transaction commits.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// The AMQP subject, e.g. `EntityItemCreated`.
    pub event_type: &'a str,
    /// The event as JSON text; it travels byte for byte as the message body.
    pub payload: &'a str,
    /// The W3C trace context to continue on the consumer side.
    pub traceparent: Option<String>,
}

/// Inserts an outbox row in the caller's transaction and returns its id, which
/// becomes the message's `message_id`. Publish happens only if that transaction commits.
pub async fn enqueue(conn: &mut PgConnection, message: NewMessage<'_>) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO outbox (id, event_type, payload, traceparent) VALUES ($1, $2, $3::jsonb, $4)")
        .bind(id)
        .bind(message.event_type)
        .bind(message.payload)
        .bind(message.traceparent)
        .execute(conn)
        .await?;
    Ok(id)
}

/// Wakes the relays of this process right after a commit, so a message does
/// not wait for the next poll.
#[derive(Clone, Default, Debug)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call after the transaction that enqueued has committed.
    pub fn notify(&self) {
        self.0.notify_waiters();
        // A relay that is busy sending misses `notify_waiters`; the stored
        // permit makes its next wait return at once.
        self.0.notify_one();
    }

    pub(crate) async fn notified(&self) {
        self.0.notified().await;
    }
}
