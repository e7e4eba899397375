//! Prometheus metrics, one registry per service instance (so several instances
//! can share a test process), rendered as text at `GET /metrics`.
//!
//! Names are a contract (`docs/contracts.md`), kept in `contracts::metrics`
//! for the services that write them and apphost that reads them.
//! `prometheus-client` appends `_total` to counters, so counters are
//! registered without it ([`contracts::metrics::Metric::name`]).

use std::sync::{Arc, Mutex};

use contracts::metrics::{HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// Latency buckets from 100 µs to 2 minutes, fine around the pipeline's
/// goals (20 and 50 ms) so a p99 is read from a narrow bucket.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ]
    .into_iter()
}

pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// A registry that many parts of a service add to and `/metrics` renders.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry.lock().expect("metrics registry lock").register(name, help, metric);
    }

    /// The registry in the OpenMetrics text format, which Prometheus reads.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry.lock().expect("metrics registry lock"))
            .expect("writing to a String cannot fail");
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// `http_requests_total` and `http_request_duration_seconds`, per route and status.
#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: Family<HttpLabels, Counter>,
    pub duration: Family<HttpLabels, Histogram>,
}

impl HttpMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let requests = Family::<HttpLabels, Counter>::default();
        let duration = Family::<HttpLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        metrics.register(HTTP_REQUESTS.name, HTTP_REQUESTS.help, requests.clone());
        metrics.register(HTTP_REQUEST_DURATION_SECONDS.name, HTTP_REQUEST_DURATION_SECONDS.help, duration.clone());
        Self { requests, duration }
    }
}

/// Reads one sample from Prometheus/OpenMetrics text: the value of the first
/// line whose name and labels start with `series` (e.g. `outbox_pending` or
/// `outbox_publish_failures_total{outcome="rejected"`), summed over matches.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(series) else { continue };
        // `outbox_pending` must not match `outbox_pending_bytes`.
        if !(rest.starts_with(' ') || rest.starts_with('{') || series.ends_with(['{', ',', '"'])) {
            continue;
        }
        let value = line.rsplit(' ').next()?.parse::<f64>().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::gauge::Gauge;

    use super::*;

    #[test]
    fn counters_render_with_total_suffix_and_sample_reads_them() {
        let metrics = Metrics::new();
        let published = Counter::<u64>::default();
        let pending = Gauge::<i64>::default();
        metrics.register("outbox_published", "accepted", published.clone());
        metrics.register("outbox_pending", "pending", pending.clone());
        published.inc_by(3);
        pending.set(7);
        let text = metrics.render();
        assert!(text.contains("outbox_published_total 3"), "{text}");
        assert_eq!(sample(&text, "outbox_published_total"), Some(3.0));
        assert_eq!(sample(&text, "outbox_pending"), Some(7.0));
        assert_eq!(sample(&text, "outbox_pend"), None);
    }
}
