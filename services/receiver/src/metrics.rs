//! The `receiver_*` metrics (`../shared/design.md`).

use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};
use service_defaults::metrics::{Metrics, latency_histogram};

#[derive(Clone)]
pub struct ReceiverMetrics {
    pub processed: Counter,
    pub duplicates: Counter,
    pub rejected: Counter,
    pub end_to_end: Histogram,
    pub broker_connected: Gauge,
}

impl ReceiverMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            processed: Counter::default(),
            duplicates: Counter::default(),
            rejected: Counter::default(),
            end_to_end: latency_histogram(),
            broker_connected: Gauge::default(),
        };
        metrics.register("receiver_processed", "messages committed for the first time", this.processed.clone());
        metrics.register("receiver_duplicates", "deliveries with an already-seen message id", this.duplicates.clone());
        metrics.register("receiver_rejected", "poison messages sent to the DLQ", this.rejected.clone());
        metrics.register(
            "receiver_end_to_end_seconds",
            "outbox insert (created_at) to receiver commit",
            this.end_to_end.clone(),
        );
        metrics.register(
            "receiver_broker_connected",
            "1 when the receiver holds a live link",
            this.broker_connected.clone(),
        );
        this
    }
}
