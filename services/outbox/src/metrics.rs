//! The `outbox_*` metrics (`docs/contracts.md`, names in `contracts::metrics`); one set per process,
//! shared by all its relays.

use contracts::metrics::{
    OUTBOX_ACCEPT_SECONDS, OUTBOX_BROKER_CONNECTED, OUTBOX_DEAD_LETTERED, OUTBOX_LAG_SECONDS,
    OUTBOX_OLDEST_PENDING_SECONDS, OUTBOX_PENDING, OUTBOX_PUBLISH_FAILURES, OUTBOX_PUBLISHED, OUTBOX_SEND_SECONDS,
    OUTBOX_WAIT_SECONDS,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};
use service_defaults::metrics::{Metrics, latency_histogram};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `rejected`, `released`, `modified`, `timeout` or `link_error`.
    pub outcome: String,
}

#[derive(Clone)]
pub struct OutboxMetrics {
    pub pending: Gauge,
    pub oldest_pending_seconds: Gauge<f64, AtomicU64>,
    pub published: Counter,
    pub publish_failures: Family<OutcomeLabel, Counter>,
    pub dead_lettered: Counter,
    pub lag: Histogram,
    /// The stages of the lag: waiting in the outbox, sending, the broker's accept.
    pub wait: Histogram,
    pub send: Histogram,
    pub accept: Histogram,
    pub broker_connected: Gauge,
}

impl OutboxMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            pending: Gauge::default(),
            oldest_pending_seconds: Gauge::default(),
            published: Counter::default(),
            publish_failures: Family::default(),
            dead_lettered: Counter::default(),
            lag: latency_histogram(),
            wait: latency_histogram(),
            send: latency_histogram(),
            accept: latency_histogram(),
            broker_connected: Gauge::default(),
        };
        metrics.register(OUTBOX_PENDING.name, OUTBOX_PENDING.help, this.pending.clone());
        metrics.register(
            OUTBOX_OLDEST_PENDING_SECONDS.name,
            OUTBOX_OLDEST_PENDING_SECONDS.help,
            this.oldest_pending_seconds.clone(),
        );
        metrics.register(OUTBOX_PUBLISHED.name, OUTBOX_PUBLISHED.help, this.published.clone());
        metrics.register(OUTBOX_PUBLISH_FAILURES.name, OUTBOX_PUBLISH_FAILURES.help, this.publish_failures.clone());
        metrics.register(OUTBOX_DEAD_LETTERED.name, OUTBOX_DEAD_LETTERED.help, this.dead_lettered.clone());
        metrics.register(OUTBOX_LAG_SECONDS.name, OUTBOX_LAG_SECONDS.help, this.lag.clone());
        for (metric, histogram) in [
            (OUTBOX_WAIT_SECONDS, &this.wait),
            (OUTBOX_SEND_SECONDS, &this.send),
            (OUTBOX_ACCEPT_SECONDS, &this.accept),
        ] {
            metrics.register(metric.name, metric.help, histogram.clone());
        }
        metrics.register(OUTBOX_BROKER_CONNECTED.name, OUTBOX_BROKER_CONNECTED.help, this.broker_connected.clone());
        this
    }

    pub fn failure(&self, outcome: &str) {
        self.publish_failures.get_or_create(&OutcomeLabel { outcome: outcome.to_owned() }).inc();
    }
}
