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

/// Wakes the relays of this process: the lead right after a commit, so a
/// message does not wait for the next poll; one more relay whenever a claim
/// came back full, so relays join only while there is a backlog.
///
/// Waking any idle relay on each commit (one of 4) sent each row in a
/// transaction and a broker round trip of its own whenever one was idle: at
/// 1,700 POST/s offered that took 175 % of the machine's 2 cores, refused 9
/// to 44 requests a run (503) and gave end-to-end p99s of 21 to 36 ms; with
/// the lead alone woken by commits, 158 %, none refused, 11 to 15 ms
/// (`apphost bench --only closed,open --rates 480,1700`, 3 runs each). A
/// single relay drains a backlog slower than `artemis perf producer` (a
/// batch waits for its last accept), hence the relays that join: the drain
/// stayed at 0.88 to 1.08 of perf's rate on a warm broker (`--only drain`).
#[derive(Clone, Default, Debug)]
pub struct Wakeup(Arc<Bells>);

#[derive(Default, Debug)]
struct Bells {
    commit: Notify,
    backlog: Notify,
}

impl Wakeup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call after the transaction that enqueued has committed: the lead relay
    /// wakes; when it is busy, the permit this leaves makes it claim again as
    /// soon as it is done, everything committed meanwhile in one batch.
    pub fn notify(&self) {
        self.0.commit.notify_one();
    }

    pub(crate) async fn notified(&self) {
        self.0.commit.notified().await;
    }

    /// A claim came back full: one more relay joins.
    pub(crate) fn backlog(&self) {
        self.0.backlog.notify_one();
    }

    pub(crate) async fn backlog_notified(&self) {
        self.0.backlog.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Wakeup;

    #[tokio::test]
    async fn a_commit_wakes_the_lead_and_is_kept_while_it_is_busy() {
        let wakeup = Wakeup::new();
        let (lead, helper) = (wakeup.clone(), wakeup.clone());
        let lead = tokio::spawn(async move { lead.notified().await });
        let helper = tokio::spawn(async move { helper.backlog_notified().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        wakeup.notify();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(lead.is_finished(), "a commit wakes the lead");
        assert!(!helper.is_finished(), "a commit alone wakes no helper");
        wakeup.backlog();
        tokio::time::timeout(Duration::from_millis(100), helper).await.expect("a full claim wakes a helper").unwrap();

        // The lead busy sending: the next time it waits, it returns at once.
        wakeup.notify();
        tokio::time::timeout(Duration::from_millis(100), wakeup.notified())
            .await
            .expect("a wake-up while the lead was busy is not lost");
    }
}
