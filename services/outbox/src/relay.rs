//! The relay: claim due rows, send them pipelined, settle by outcome.
//!
//! [`Relay::try_publish_batch`] is one deterministic step, so tests can drive
//! it; [`Relay::run`] loops it with wake-ups, polling, reconnects and backoff.
//!
//! A batch lives in one database transaction: its rows are locked
//! (`FOR UPDATE SKIP LOCKED`, so several relays share the table without
//! sending a row twice), every message is sent before any outcome is awaited
//! (up to `max_in_flight` unsettled at once), and only Accepted rows are
//! deleted. A row whose outcome is unknown (link lost, timeout) is left as it
//! was and sent again after reconnecting: the receiver's inbox absorbs the
//! copy by its `message_id` (and with `broker_dedup` Artemis drops it first,
//! by its `_AMQ_DUPL_ID`).

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use chrono::{SecondsFormat, Utc};
use fe2o3_amqp::{
    link::{SendError, delivery::DeliveryFut},
    types::{messaging::Outcome, primitives::SimpleValue},
};
use service_defaults::{amqp::AmqpError, backoff::Backoff};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use uuid::Uuid;

use crate::{
    BrokerSettings, OutboxMetrics, Wakeup,
    broker::Link,
    message::{OutboxRow, SENT_AT_PROPERTY, TRACEPARENT_PROPERTY, to_amqp},
};

#[derive(Clone, Debug)]
pub struct RelaySettings {
    /// Rows claimed per transaction.
    pub batch_size: u32,
    /// Unsettled deliveries allowed at once within a batch.
    pub max_in_flight: usize,
    /// How often to look for rows written by other processes.
    pub poll_interval: Duration,
    /// How long one send or one outcome may take before the link is declared dead.
    pub send_timeout: Duration,
    /// Refused sends before a row moves to `outbox_dead_letter`.
    pub max_attempts: i32,
    /// Delay before retrying a refused row, doubled per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Reconnect backoff bounds (exponential, with jitter). The ceiling is
    /// low (500 ms): the relay sends within it of the broker accepting
    /// again, and a refused connection costs the broker nothing.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Ask Artemis to drop re-sent copies (`_AMQ_DUPL_ID`). Off by default:
    /// the receiver absorbs them anyway, and the broker journals each such
    /// message in a transaction of its own with its id, which cost a warm
    /// broker's drain here 0.57 → 0.92 of `artemis perf producer`'s rate
    /// (`apphost bench --only drain`, 3 runs each).
    pub broker_dedup: bool,
    /// Make the batch's commit (the deletes of Accepted rows) wait for the
    /// WAL flush. Off by default: such a commit lost in a database crash
    /// leaves rows the broker already has, which are sent again (a copy the
    /// receiver absorbs, as after any unknown outcome); the writes the rows
    /// came from stay as durable as ever. Each flush saved is one fewer per
    /// batch on the database the `POST`s commit to: at 480 POST/s the
    /// outbox lag's p99 (median of 3 runs) was 29.3 and 33.7 ms with it on,
    /// 23.8 and 25.3 ms off (`apphost bench --only closed,open`, twice each).
    pub durable_delete: bool,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 256,
            max_in_flight: 256,
            poll_interval: Duration::from_millis(250),
            send_timeout: Duration::from_secs(10),
            max_attempts: 10,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(500),
            broker_dedup: false,
            durable_delete: false,
        }
    }
}

/// The claim: due rows in the order of the `outbox_due` index, so its plan is
/// an index scan that stops at the batch's size whatever the statistics say.
/// The outbox is a queue: autovacuum may analyze it when it happens to be
/// nearly empty and leave `reltuples` at 0 while a backlog grows. Then every
/// index looks as cheap as any other, and `ORDER BY id` was planned as a
/// bitmap scan of every due row and a sort: at 3,500 items/s the claims and
/// deletes took the sender's database to 120 % CPU and the relay fell to a
/// few hundred a second, until the next autovacuum (`apphost bench --only
/// closed,sustained`, sampled).
pub const CLAIM: &str = "\
    SELECT ctid::text AS ctid, id, event_type, payload::text AS payload, created_at, traceparent, attempts
      FROM outbox
     WHERE next_attempt_at <= now()
     ORDER BY next_attempt_at, id
     LIMIT $1
       FOR UPDATE SKIP LOCKED";

/// The Accepted rows' delete: by where the claim found them (a TID scan, no
/// index to choose). The claim's row lock holds every claimed row in place
/// until the commit; the relay still checks the ids it deleted against the
/// ids claimed and rolls back on a mismatch, so a wrong `ctid` could only
/// make rows be sent again, never delete one not sent.
pub const DELETE_ACCEPTED: &str = "DELETE FROM outbox WHERE ctid = ANY($1::text[]::tid[]) RETURNING id";

/// The batch's transaction. Sequential scans are off in it, so the delete is
/// a TID scan even where the statistics make a scan of every page look
/// cheaper (on a table under about 1,000 pages a TID scan of 256 rows is
/// costed above it); no index can serve a `ctid` condition, so that leaves
/// the planner nothing else.
pub const BEGIN: &str = "BEGIN; SET LOCAL enable_seqscan = off";
/// [`BEGIN`] for a commit that does not wait for the WAL flush (`durable_delete` off).
pub const BEGIN_ASYNC_COMMIT: &str = "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL synchronous_commit = off";

/// Whether the delete by `ctid` removed exactly the Accepted rows claimed.
/// Never seen to fail: the claim's row lock holds each row in place.
fn deleted_as_claimed(mut claimed: Vec<Uuid>, mut deleted: Vec<Uuid>) -> Result<(), RelayError> {
    claimed.sort_unstable();
    deleted.sort_unstable();
    if claimed == deleted { Ok(()) } else { Err(RelayError::Moved { claimed: claimed.len(), deleted: deleted.len() }) }
}

/// What one [`Relay::try_publish_batch`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub claimed: usize,
    /// Accepted by the broker and deleted from the outbox.
    pub accepted: usize,
    /// Refused (rejected, released, modified): kept with a later retry time.
    pub refused: usize,
    /// Refused too often: moved to `outbox_dead_letter`.
    pub dead_lettered: usize,
    /// Sent or not, fate unknown (link lost or timed out): left untouched.
    pub unknown: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The link failed; the batch's settled part was committed, the rest stays.
    #[error("broker link lost: {reason} ({outcome:?})")]
    Broker { reason: String, outcome: BatchOutcome },
    #[error(transparent)]
    Connect(#[from] AmqpError),
    #[error("outbox database: {0}")]
    Database(#[from] sqlx::Error),
    /// The delete by `ctid` did not find exactly the rows claimed: rolled back.
    #[error(
        "the delete of {claimed} accepted rows found {deleted} of them where claimed; rolled back, to be sent again"
    )]
    Moved { claimed: usize, deleted: usize },
}

pub struct Relay {
    pool: PgPool,
    broker: BrokerSettings,
    settings: RelaySettings,
    metrics: OutboxMetrics,
    wakeup: Wakeup,
    /// Woken by a full claim ([`Wakeup::backlog`]), not by commits.
    joins_on_backlog: bool,
    link: Option<Link>,
}

type Delivery = DeliveryFut<Result<Outcome, SendError>>;

/// How a single message fared.
enum Fate {
    Accepted,
    Refused { outcome: &'static str, error: String },
    Unknown { reason: String },
}

impl Relay {
    pub fn new(
        pool: PgPool,
        broker: BrokerSettings,
        settings: RelaySettings,
        metrics: OutboxMetrics,
        wakeup: Wakeup,
    ) -> Self {
        Self { pool, broker, settings, metrics, wakeup, joins_on_backlog: false, link: None }
    }

    /// A relay that waits for a backlog (another relay's claim came back
    /// full) instead of for commits; it polls as every relay does.
    pub fn joining_on_backlog(mut self) -> Self {
        self.joins_on_backlog = true;
        self
    }

    /// A claim of `claimed` rows came back full: more is likely due.
    fn is_full(&self, claimed: usize) -> bool {
        claimed == self.settings.batch_size as usize
    }

    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// Opens the link if there is none.
    pub async fn connect(&mut self) -> Result<(), AmqpError> {
        if self.link.is_none() {
            let link = Link::open(&self.broker).await?;
            tracing::info!(broker = %self.broker.masked_url(), address = %self.broker.address, "relay connected to the broker");
            self.link = Some(link);
            self.metrics.broker_connected.set(1);
        }
        Ok(())
    }

    async fn disconnect(&mut self) {
        if let Some(link) = self.link.take() {
            self.metrics.broker_connected.set(0);
            link.close().await;
        }
    }

    /// Claims up to `batch_size` due rows, sends them all, and settles each by its outcome.
    pub async fn try_publish_batch(&mut self) -> Result<BatchOutcome, RelayError> {
        self.connect().await?;
        // One round trip: the setting travels with the BEGIN (simple query protocol).
        let begin = if self.settings.durable_delete { BEGIN } else { BEGIN_ASYNC_COMMIT };
        let mut tx = self.pool.begin_with(begin).await?;
        let rows: Vec<OutboxRow> =
            sqlx::query_as(CLAIM).bind(i64::from(self.settings.batch_size)).fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(BatchOutcome::default());
        }
        if self.is_full(rows.len()) {
            self.wakeup.backlog();
        }
        let claimed = Utc::now();
        for row in &rows {
            self.metrics.wait.observe(seconds_between(row.created_at, claimed));
        }

        let span = tracing::debug_span!("outbox.publish_batch", rows = rows.len());
        let (fates, link_error) = self.send_all(&rows).instrument(span).await;

        let mut outcome = BatchOutcome { claimed: rows.len(), ..Default::default() };
        let mut accepted = Vec::new();
        let (mut refused_ids, mut refused_errors) = (Vec::new(), Vec::new());
        let now = Utc::now();
        for (row, fate) in rows.iter().zip(fates) {
            match fate {
                Fate::Accepted => {
                    accepted.push(row);
                    self.metrics.lag.observe(seconds_between(row.created_at, now));
                }
                Fate::Refused { outcome: label, error } => {
                    self.metrics.failure(label);
                    tracing::warn!(message_id = %row.id, outcome = label, %error, attempts = row.attempts + 1, "broker refused a message; will retry");
                    refused_ids.push(row.id);
                    refused_errors.push(format!("{label}: {error}"));
                }
                Fate::Unknown { reason } => {
                    self.metrics.failure(if reason.contains("timed out") { "timeout" } else { "link_error" });
                    outcome.unknown += 1;
                }
            }
        }
        outcome.accepted = accepted.len();
        outcome.refused = refused_ids.len();

        if !accepted.is_empty() {
            let ctids: Vec<&str> = accepted.iter().map(|r| r.ctid.as_str()).collect();
            let deleted: Vec<Uuid> = sqlx::query_scalar(DELETE_ACCEPTED).bind(&ctids).fetch_all(&mut *tx).await?;
            // On a mismatch the transaction is dropped: rolled back, so the batch is
            // sent again (copies the receiver absorbs), and no other row is gone.
            deleted_as_claimed(accepted.iter().map(|r| r.id).collect(), deleted)?;
        }
        if !refused_ids.is_empty() {
            sqlx::query(
                "UPDATE outbox o
                    SET attempts = o.attempts + 1,
                        next_attempt_at = now() + make_interval(secs => least($3 * power(2, o.attempts), $4)),
                        last_error = f.error
                   FROM UNNEST($1::uuid[], $2::text[]) AS f(id, error)
                  WHERE o.id = f.id",
            )
            .bind(&refused_ids)
            .bind(&refused_errors)
            .bind(self.settings.retry_base.as_secs_f64())
            .bind(self.settings.retry_max.as_secs_f64())
            .execute(&mut *tx)
            .await?;
            let moved = sqlx::query(
                "WITH moved AS (
                     DELETE FROM outbox WHERE id = ANY($1) AND attempts >= $2 RETURNING *
                 )
                 INSERT INTO outbox_dead_letter (id, event_type, payload, created_at, traceparent, attempts, last_error)
                 SELECT id, event_type, payload, created_at, traceparent, attempts, last_error FROM moved",
            )
            .bind(&refused_ids)
            .bind(self.settings.max_attempts)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            outcome.dead_lettered = usize::try_from(moved).unwrap_or(usize::MAX);
        }
        tx.commit().await?;
        // Counted only once the deletes are durable.
        self.metrics.published.inc_by(outcome.accepted as u64);
        self.metrics.dead_lettered.inc_by(outcome.dead_lettered as u64);
        if outcome.dead_lettered > 0 {
            tracing::error!(
                count = outcome.dead_lettered,
                max_attempts = self.settings.max_attempts,
                "messages moved to outbox_dead_letter after repeated refusals"
            );
        }

        match link_error {
            Some(reason) => {
                self.disconnect().await;
                Err(RelayError::Broker { reason, outcome })
            }
            None => Ok(outcome),
        }
    }

    /// Sends every row without waiting, then collects the outcomes. Stops
    /// sending at the first link failure; rows not sent are `Unknown`.
    async fn send_all(&mut self, rows: &[OutboxRow]) -> (Vec<Fate>, Option<String>) {
        let send_timeout = self.settings.send_timeout;
        let max_in_flight = self.settings.max_in_flight.max(1);
        let broker_dedup = self.settings.broker_dedup;
        let address = self.broker.address.clone();
        let metrics = self.metrics.clone();
        let link = self.link.as_mut().expect("connected before sending");
        let mut fates: Vec<Option<Fate>> = rows.iter().map(|_| None).collect();
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut link_error: Option<String> = None;
        let claimed = Instant::now();

        for (index, row) in rows.iter().enumerate() {
            while in_flight.len() >= max_in_flight {
                let sent = in_flight.pop_front().expect("non-empty");
                let index = sent.index;
                let fate = sent.settle(Instant::now() + send_timeout, &metrics).await;
                note_link_error(&fate, &mut link_error);
                fates[index] = Some(fate);
            }
            if link_error.is_some() {
                break;
            }
            let span = publish_span(row, &address);
            let mut message = to_amqp(row, broker_dedup);
            if let Some(props) = message.application_properties.as_mut() {
                if let Some(tp) = service_defaults::telemetry::traceparent(&span) {
                    props.0.insert(TRACEPARENT_PROPERTY.to_owned(), SimpleValue::String(tp));
                }
                let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
                props.0.insert(SENT_AT_PROPERTY.to_owned(), SimpleValue::String(now));
            }
            match tokio::time::timeout(send_timeout, link.sender.send_batchable(message)).await {
                Ok(Ok(delivery)) => {
                    let handed = Instant::now();
                    metrics.send.observe(handed.duration_since(claimed).as_secs_f64());
                    in_flight.push_back(InFlight { index, delivery, handed, _span: span });
                }
                Ok(Err(e)) => link_error = Some(e.to_string()),
                Err(_) => link_error = Some(format!("timed out after {send_timeout:?} waiting for credit")),
            }
        }
        let deadline = Instant::now() + send_timeout;
        for sent in in_flight {
            let index = sent.index;
            let fate = sent.settle(deadline, &metrics).await;
            note_link_error(&fate, &mut link_error);
            fates[index] = Some(fate);
        }
        let reason = link_error.clone().unwrap_or_default();
        let fates = fates
            .into_iter()
            .map(|f| f.unwrap_or_else(|| Fate::Unknown { reason: format!("not sent: {reason}") }))
            .collect();
        (fates, link_error)
    }

    /// Publishes until `cancel` fires: right after a wake-up, else every
    /// `poll_interval`; reconnects with exponential backoff and jitter. A batch
    /// in progress is finished (bounded by `send_timeout`), never cut.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.settings.reconnect_min, self.settings.reconnect_max);
        while !cancel.is_cancelled() {
            let wait = match self.try_publish_batch().await {
                Ok(outcome) => {
                    backoff.reset();
                    if self.is_full(outcome.claimed) {
                        continue; // more is due: no pause
                    }
                    None
                }
                Err(RelayError::Broker { reason, outcome }) => {
                    tracing::warn!(%reason, ?outcome, "broker link lost; rows not settled stay in the outbox");
                    Some(backoff.next_delay())
                }
                Err(RelayError::Connect(err)) => {
                    let delay = backoff.next_delay();
                    if backoff.worth_logging() {
                        tracing::warn!(error = %err, retry_in = ?delay, attempt = backoff.attempt, "broker unreachable; writes keep queueing in the outbox");
                    }
                    Some(delay)
                }
                Err(RelayError::Database(err)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %err, retry_in = ?delay, "outbox database unavailable");
                    Some(delay)
                }
                Err(err @ RelayError::Moved { .. }) => {
                    tracing::error!(error = %err, "outbox rows were not where the claim found them");
                    Some(backoff.next_delay())
                }
            };
            match wait {
                Some(delay) => {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = self.wakeup.notified(), if !self.joins_on_backlog => {}
                        _ = self.wakeup.backlog_notified(), if self.joins_on_backlog => {}
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                    }
                }
            }
        }
        self.disconnect().await;
    }
}

/// A message handed to the link whose outcome is still to come.
struct InFlight {
    index: usize,
    delivery: Delivery,
    handed: Instant,
    _span: Span,
}

impl InFlight {
    /// Its outcome; an Accepted one counts the broker's share of the lag.
    async fn settle(self, deadline: Instant, metrics: &OutboxMetrics) -> Fate {
        let fate = settle(self.delivery, deadline).await;
        if matches!(fate, Fate::Accepted) {
            metrics.accept.observe(self.handed.elapsed().as_secs_f64());
        }
        fate
    }
}

/// Seconds from `from` to `to`, 0 if the clock says `to` came first.
fn seconds_between(from: chrono::DateTime<Utc>, to: chrono::DateTime<Utc>) -> f64 {
    (to - from).to_std().unwrap_or_default().as_secs_f64()
}

fn note_link_error(fate: &Fate, link_error: &mut Option<String>) {
    if let Fate::Unknown { reason } = fate {
        link_error.get_or_insert_with(|| reason.clone());
    }
}

async fn settle(delivery: Delivery, deadline: Instant) -> Fate {
    match tokio::time::timeout_at(deadline.into(), delivery).await {
        Ok(Ok(Outcome::Accepted(_))) => Fate::Accepted,
        Ok(Ok(Outcome::Rejected(r))) => Fate::Refused {
            outcome: "rejected",
            error: r.error.map_or_else(
                || "no reason given".into(),
                |e| format!("{:?}: {}", e.condition, e.description.unwrap_or_default()),
            ),
        },
        Ok(Ok(Outcome::Released(_))) => Fate::Refused { outcome: "released", error: "released by the broker".into() },
        Ok(Ok(Outcome::Modified(m))) => Fate::Refused {
            outcome: "modified",
            error: format!("modified by the broker (delivery_failed: {:?})", m.delivery_failed),
        },
        #[allow(unreachable_patterns)]
        Ok(Ok(other)) => Fate::Refused { outcome: "other", error: format!("{other:?}") },
        Ok(Err(e)) => Fate::Unknown { reason: e.to_string() },
        Err(_) => Fate::Unknown { reason: "timed out waiting for the outcome".into() },
    }
}

fn publish_span(row: &OutboxRow, address: &str) -> Span {
    // Not traced, or its trace not sampled: no span (the message carries the row's traceparent).
    if !row.traceparent.as_deref().is_some_and(service_defaults::telemetry::sampled) {
        return Span::none();
    }
    let span = tracing::info_span!(
        "outbox publish",
        otel.kind = "producer",
        messaging.system = "activemq",
        messaging.destination.name = %address,
        messaging.message.id = %row.id,
    );
    service_defaults::telemetry::continue_from(&span, row.traceparent.as_deref());
    span
}

/// Keeps `outbox_pending` and `outbox_oldest_pending_seconds` current, once
/// per `period`, until `cancel` fires. One per process is enough.
pub async fn watch_backlog(pool: PgPool, metrics: OutboxMetrics, period: Duration, cancel: CancellationToken) {
    loop {
        if let Ok((pending, oldest)) = backlog(&pool).await {
            metrics.pending.set(pending);
            metrics.oldest_pending_seconds.set(oldest);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Pending rows and the age in seconds of the oldest one.
pub async fn backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as("SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) FROM outbox")
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::{RelayError, deleted_as_claimed};

    #[test]
    fn a_delete_that_did_not_remove_exactly_the_claimed_rows_is_refused() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert!(deleted_as_claimed(vec![a, b], vec![b, a]).is_ok(), "the order the delete returns them in is free");
        for deleted in [vec![a], vec![a, c], vec![a, b, c]] {
            let result = deleted_as_claimed(vec![a, b], deleted.clone());
            assert!(matches!(result, Err(RelayError::Moved { claimed: 2, .. })), "{deleted:?}: {result:?}");
        }
    }
}
