//! The `outbox_*` metrics (`../shared/design.md`); one set per process,
//! shared by all its relays.

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
            broker_connected: Gauge::default(),
        };
        metrics.register("outbox_pending", "rows not yet accepted by the broker", this.pending.clone());
        metrics.register(
            "outbox_oldest_pending_seconds",
            "age of the oldest pending row (0 if none)",
            this.oldest_pending_seconds.clone(),
        );
        metrics.register("outbox_published", "messages accepted by the broker", this.published.clone());
        metrics.register(
            "outbox_publish_failures",
            "sends not accepted by the broker, by outcome",
            this.publish_failures.clone(),
        );
        metrics.register("outbox_dead_lettered", "rows given up on after the retry limit", this.dead_lettered.clone());
        metrics.register("outbox_lag_seconds", "outbox insert to broker Accepted", this.lag.clone());
        metrics.register(
            "outbox_broker_connected",
            "1 when the relay holds a live link to the broker",
            this.broker_connected.clone(),
        );
        this
    }

    pub fn failure(&self, outcome: &str) {
        self.publish_failures.get_or_create(&OutcomeLabel { outcome: outcome.to_owned() }).inc();
    }
}
