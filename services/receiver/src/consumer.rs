//! The AMQP side: receive in batches, commit, then settle.
//!
//! Settlement follows `docs/contracts.md`: *accept* only after the database
//! commit; *reject* (with a description, so Artemis moves the message to its
//! DLQ) what can never be processed; while the database is down, hold the
//! batch unsettled and retry, and on shutdown *release* it so it comes back.

use std::time::{Duration, Instant};

use chrono::Utc;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::{
    Receiver,
    link::{
        RecvError,
        delivery::{Delivery, DeliveryInfo},
    },
    types::{
        definitions::{self, AmqpError},
        messaging::{Body, Source},
        primitives::{Symbol, Value},
    },
};
use service_defaults::{
    amqp::{AmqpSession, AmqpSettings},
    backoff::Backoff,
    db::{is_about_the_data, is_transient},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Span;

use crate::{
    decode::{Event, decode},
    metrics::ReceiverMetrics,
    store::{self, Stored},
};

type Message = Delivery<Body<Value>>;

#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub amqp: AmqpSettings,
    pub address: String,
    pub credit: u32,
    pub batch_size: usize,
    pub batch_wait: Duration,
}

pub struct Consumer {
    settings: ConsumerSettings,
    pool: PgPool,
    metrics: ReceiverMetrics,
}

/// A received message that decoded, with the span of its processing.
struct Pending {
    delivery: Message,
    event: Event,
    received: Instant,
    _span: Span,
}

enum Commit {
    Stored(Stored),
    Cancelled,
    Fatal(sqlx::Error),
}

impl Consumer {
    pub fn new(settings: ConsumerSettings, pool: PgPool, metrics: ReceiverMetrics) -> Self {
        Self { settings, pool, metrics }
    }

    /// Consumes until `cancel` fires, reconnecting with backoff after any fault.
    pub async fn run(self, cancel: CancellationToken) {
        // At most half a second between attempts: a broker back is consumed from at once,
        // and a refused TCP connect costs nothing.
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        while !cancel.is_cancelled() {
            match self.attach().await {
                Ok((session, mut receiver)) => {
                    tracing::info!(broker = %self.settings.amqp.masked_url(), address = %self.settings.address, "receiver attached to the broker");
                    self.metrics.broker_connected.set(1);
                    backoff.reset();
                    let result = self.consume(&mut receiver, &cancel).await;
                    self.metrics.broker_connected.set(0);
                    let _ = tokio::time::timeout(Duration::from_secs(2), receiver.close()).await;
                    session.close().await;
                    if let Err(reason) = result {
                        tracing::warn!(%reason, "broker link lost; unsettled messages will be redelivered");
                    }
                }
                Err(err) => {
                    let delay = backoff.next_delay();
                    if backoff.worth_logging() {
                        tracing::warn!(error = %err, retry_in = ?delay, attempt = backoff.attempt, "broker unreachable");
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn attach(&self) -> Result<(AmqpSession, Receiver), service_defaults::amqp::AmqpError> {
        let source =
            Source::builder().address(self.settings.address.clone()).capabilities(vec![Symbol::from("queue")]).build();
        let name = format!("{}-receiver", self.settings.amqp.container_id);
        let credit = self.settings.credit;
        AmqpSession::open_with(&self.settings.amqp, async |session| {
            Receiver::builder()
                .name(name)
                .source(source)
                .credit_mode(CreditMode::Auto(credit))
                .auto_accept(false)
                .attach(session)
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// Receives batches until cancelled (`Ok`) or the link fails (`Err`).
    async fn consume(&self, receiver: &mut Receiver, cancel: &CancellationToken) -> Result<(), String> {
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                received = receiver.recv::<Body<Value>>() => received,
            };
            let mut batch = Vec::new();
            self.take(receiver, first, &mut batch).await?;
            let deadline = Instant::now() + self.settings.batch_wait;
            while batch.len() < self.settings.batch_size {
                match tokio::time::timeout_at(deadline.into(), receiver.recv::<Body<Value>>()).await {
                    Ok(received) => self.take(receiver, received, &mut batch).await?,
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(receiver, batch, cancel).await?;
            }
        }
    }

    /// Adds a decodable message to the batch; rejects a poison one at once.
    async fn take(
        &self,
        receiver: &Receiver,
        received: Result<Message, RecvError>,
        batch: &mut Vec<Pending>,
    ) -> Result<(), String> {
        match received {
            Ok(delivery) => match decode(delivery.message()) {
                Ok(event) => {
                    let traced = event.traceparent.as_deref().is_some_and(service_defaults::telemetry::sampled);
                    let span = if !traced {
                        // Its trace is not sampled (or there is none): no span to pay for.
                        Span::none()
                    } else {
                        tracing::info_span!(
                        "receiver process",
                        otel.kind = "consumer",
                        messaging.system = "activemq",
                        messaging.destination.name = %self.settings.address,
                        messaging.message.id = %event.message_id,
                        )
                    };
                    service_defaults::telemetry::continue_from(&span, event.traceparent.as_deref());
                    if let Some(sent_at) = event.sent_at {
                        self.metrics.delivery.observe(seconds_since(sent_at));
                    }
                    batch.push(Pending { delivery, event, received: Instant::now(), _span: span });
                    Ok(())
                }
                Err(reason) => self.reject(receiver, &delivery, reason).await,
            },
            Err(RecvError::MessageDecode(e)) => {
                self.reject(receiver, e.info, format!("the message cannot be decoded: {}", e.source)).await
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn reject(
        &self,
        receiver: &Receiver,
        delivery: impl Into<DeliveryInfo>,
        reason: String,
    ) -> Result<(), String> {
        tracing::warn!(%reason, "rejecting a poison message; the broker moves it to the DLQ");
        let error = definitions::Error::new(AmqpError::DecodeError, Some(reason), None);
        receiver.reject(delivery, error).await.map_err(|e| e.to_string())?;
        self.metrics.rejected.inc();
        Ok(())
    }

    /// Commits a batch and accepts it. A batch that fails for a reason in its
    /// data is retried one message at a time, so only the bad message is rejected.
    async fn commit(&self, receiver: &Receiver, batch: Vec<Pending>, cancel: &CancellationToken) -> Result<(), String> {
        let events: Vec<&Event> = batch.iter().map(|p| &p.event).collect();
        let storing = Instant::now();
        for pending in &batch {
            self.metrics.batch_wait.observe(storing.duration_since(pending.received).as_secs_f64());
        }
        if cfg!(feature = "accept-before-commit") {
            // Broken on purpose (tests only): the broker forgets the batch before it is stored.
            accept_all(receiver, &batch).await?;
            if let Commit::Stored(stored) = self.store_with_retry(&events, cancel).await {
                self.tally(&batch, stored);
            }
            return Ok(());
        }
        // One span a message, each a child of its own processing span: the batch's transaction, in each trace.
        let commits: Vec<Span> = batch
            .iter()
            .map(|p| match p._span.is_none() {
                true => Span::none(),
                false => tracing::info_span!(parent: &p._span, "receiver commit", otel.kind = "internal", db.system.name = "postgresql", messaging.batch.message_count = batch.len()),
            })
            .collect();
        let outcome = self.store_with_retry(&events, cancel).await;
        drop(commits);
        match outcome {
            Commit::Stored(stored) => {
                self.metrics.commit.observe(storing.elapsed().as_secs_f64());
                self.tally(&batch, stored);
                // If this fails the commit stands: the redelivery is absorbed by the inbox.
                accept_all(receiver, &batch).await
            }
            Commit::Cancelled => release(receiver, &batch).await,
            Commit::Fatal(err) if batch.len() == 1 => {
                let reason = format!("the message cannot be stored: {err}");
                self.reject(receiver, &batch[0].delivery, reason).await
            }
            Commit::Fatal(err) => {
                tracing::warn!(error = %err, size = batch.len(), "batch failed; storing its messages one by one");
                for pending in batch {
                    Box::pin(self.commit(receiver, vec![pending], cancel)).await?;
                }
                Ok(())
            }
        }
    }

    /// Stores `events`, holding them unsettled and retrying while the database
    /// cannot take them (down, read-only, out of disk, a statement cancelled):
    /// only an error about the data itself ends the attempt ([`Commit::Fatal`]).
    async fn store_with_retry(&self, events: &[&Event], cancel: &CancellationToken) -> Commit {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match store::store(&self.pool, events).await {
                Ok(stored) => return Commit::Stored(stored),
                Err(err) if is_about_the_data(&err) => return Commit::Fatal(err),
                Err(err) => {
                    let delay = backoff.next_delay();
                    if backoff.worth_logging() {
                        let code = sqlstate(&err);
                        if is_transient(&err) {
                            tracing::warn!(error = %err, code = code.as_deref(), held = events.len(), retry_in = ?delay, "database unavailable; holding messages unsettled");
                        } else {
                            tracing::error!(error = %err, code = code.as_deref(), held = events.len(), retry_in = ?delay, "the database refuses the batch for a reason outside its data; holding messages unsettled until it is fixed");
                        }
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return Commit::Cancelled,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Counts a stored batch: new messages as processed, the rest as duplicates.
    fn tally(&self, batch: &[Pending], mut stored: Stored) {
        for pending in batch {
            // `remove`: a message id twice in one batch counts once as new.
            if stored.new.remove(&pending.event.message_id) {
                // Entered, not just named as the parent: an OTLP record takes its trace from the current context.
                let _in = pending._span.enter();
                tracing::debug!(message_id = %pending.event.message_id, "message stored");
                self.metrics.processed.inc();
                self.metrics.end_to_end.observe(seconds_since(pending.event.created_at));
            } else {
                self.metrics.duplicates.inc();
                let _in = pending._span.enter();
                tracing::debug!(message_id = %pending.event.message_id, "duplicate delivery absorbed");
            }
        }
    }
}

/// Seconds since `then` by the wall clock, 0 if it lies in the future.
fn seconds_since(then: chrono::DateTime<Utc>) -> f64 {
    (Utc::now() - then).to_std().unwrap_or_default().as_secs_f64()
}

async fn accept_all(receiver: &Receiver, batch: &[Pending]) -> Result<(), String> {
    receiver.accept_all(batch.iter().map(|p| &p.delivery)).await.map_err(|e| e.to_string())
}

/// The SQLSTATE of a database error, for the log.
fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error().and_then(|db| db.code()).map(|code| code.into_owned())
}

async fn release(receiver: &Receiver, batch: &[Pending]) -> Result<(), String> {
    receiver.release_all(batch.iter().map(|p| &p.delivery)).await.map_err(|e| e.to_string())
}
