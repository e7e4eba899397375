//! The `receiver_*` metrics (`docs/contracts.md`, names in `contracts::metrics`).

use contracts::metrics::{
    RECEIVER_BROKER_CONNECTED, RECEIVER_DUPLICATES, RECEIVER_END_TO_END_SECONDS, RECEIVER_PROCESSED, RECEIVER_REJECTED,
};
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
        metrics.register(RECEIVER_PROCESSED.name, RECEIVER_PROCESSED.help, this.processed.clone());
        metrics.register(RECEIVER_DUPLICATES.name, RECEIVER_DUPLICATES.help, this.duplicates.clone());
        metrics.register(RECEIVER_REJECTED.name, RECEIVER_REJECTED.help, this.rejected.clone());
        metrics.register(RECEIVER_END_TO_END_SECONDS.name, RECEIVER_END_TO_END_SECONDS.help, this.end_to_end.clone());
        metrics.register(RECEIVER_BROKER_CONNECTED.name, RECEIVER_BROKER_CONNECTED.help, this.broker_connected.clone());
        this
    }
}
