//! The `receiver_*` metrics (`docs/contracts.md`, names in `contracts::metrics`).

use contracts::metrics::{
    RECEIVER_BATCH_WAIT_SECONDS, RECEIVER_BROKER_CONNECTED, RECEIVER_COMMIT_SECONDS, RECEIVER_DELIVERY_SECONDS,
    RECEIVER_DUPLICATES, RECEIVER_END_TO_END_SECONDS, RECEIVER_PROCESSED, RECEIVER_REJECTED,
};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};
use service_defaults::metrics::{Metrics, latency_histogram};

#[derive(Clone)]
pub struct ReceiverMetrics {
    pub processed: Counter,
    pub duplicates: Counter,
    pub rejected: Counter,
    pub end_to_end: Histogram,
    /// The receiver's stages: from the relay's send, waiting for the batch, the commit.
    pub delivery: Histogram,
    pub batch_wait: Histogram,
    pub commit: Histogram,
    pub broker_connected: Gauge,
}

impl ReceiverMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            processed: Counter::default(),
            duplicates: Counter::default(),
            rejected: Counter::default(),
            end_to_end: latency_histogram(),
            delivery: latency_histogram(),
            batch_wait: latency_histogram(),
            commit: latency_histogram(),
            broker_connected: Gauge::default(),
        };
        metrics.register(RECEIVER_PROCESSED.name, RECEIVER_PROCESSED.help, this.processed.clone());
        metrics.register(RECEIVER_DUPLICATES.name, RECEIVER_DUPLICATES.help, this.duplicates.clone());
        metrics.register(RECEIVER_REJECTED.name, RECEIVER_REJECTED.help, this.rejected.clone());
        metrics.register(RECEIVER_END_TO_END_SECONDS.name, RECEIVER_END_TO_END_SECONDS.help, this.end_to_end.clone());
        for (metric, histogram) in [
            (RECEIVER_DELIVERY_SECONDS, &this.delivery),
            (RECEIVER_BATCH_WAIT_SECONDS, &this.batch_wait),
            (RECEIVER_COMMIT_SECONDS, &this.commit),
        ] {
            metrics.register(metric.name, metric.help, histogram.clone());
        }
        metrics.register(RECEIVER_BROKER_CONNECTED.name, RECEIVER_BROKER_CONNECTED.help, this.broker_connected.clone());
        this
    }
}
