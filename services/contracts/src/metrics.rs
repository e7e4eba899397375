//! The services' Prometheus series (`docs/contracts.md`, "Metrics"). The
//! services register them by [`Metric::name`] (prometheus-client appends
//! `_total` to a counter); apphost reads them by [`Metric::series`].

/// A metric as it is registered and as it is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The name it is registered under.
    pub name: &'static str,
    /// The name of the series a scrape shows (`_total` added for counters).
    pub series: &'static str,
    pub help: &'static str,
}

macro_rules! counter {
    ($name:literal, $help:literal) => {
        Metric { name: $name, series: concat!($name, "_total"), help: $help }
    };
}

macro_rules! gauge {
    ($name:literal, $help:literal) => {
        Metric { name: $name, series: $name, help: $help }
    };
}

/// A histogram exposes `NAME_bucket`, `NAME_sum` and `NAME_count`; `series` is its base name.
macro_rules! histogram {
    ($name:literal, $help:literal) => {
        Metric { name: $name, series: $name, help: $help }
    };
}

pub const OUTBOX_PENDING: Metric = gauge!("outbox_pending", "rows not yet accepted by the broker");
pub const OUTBOX_OLDEST_PENDING_SECONDS: Metric =
    gauge!("outbox_oldest_pending_seconds", "age of the oldest pending row (0 if none)");
pub const OUTBOX_PUBLISHED: Metric = counter!("outbox_published", "messages accepted by the broker");
pub const OUTBOX_PUBLISH_FAILURES: Metric =
    counter!("outbox_publish_failures", "sends not accepted by the broker, by outcome");
pub const OUTBOX_DEAD_LETTERED: Metric = counter!("outbox_dead_lettered", "rows given up on after the retry limit");
pub const OUTBOX_LAG_SECONDS: Metric = histogram!("outbox_lag_seconds", "outbox insert to broker Accepted");
/// Where a message's time goes, stage by stage (`docs/contracts.md`, "Where a message's time goes").
pub const OUTBOX_WAIT_SECONDS: Metric =
    histogram!("outbox_wait_seconds", "outbox insert to the relay claiming the row");
pub const OUTBOX_SEND_SECONDS: Metric =
    histogram!("outbox_send_seconds", "relay claim to the message handed to the AMQP link (credit, in-flight window)");
pub const OUTBOX_ACCEPT_SECONDS: Metric =
    histogram!("outbox_accept_seconds", "message handed to the link to the relay seeing the broker's Accepted");
pub const OUTBOX_BROKER_CONNECTED: Metric =
    gauge!("outbox_broker_connected", "1 when the relay holds a live link to the broker");

pub const RECEIVER_PROCESSED: Metric = counter!("receiver_processed", "messages committed for the first time");
pub const RECEIVER_DUPLICATES: Metric = counter!("receiver_duplicates", "deliveries with an already-seen message id");
pub const RECEIVER_REJECTED: Metric = counter!("receiver_rejected", "poison messages sent to the DLQ");
pub const RECEIVER_END_TO_END_SECONDS: Metric =
    histogram!("receiver_end_to_end_seconds", "outbox insert (created_at) to receiver commit");
pub const RECEIVER_DELIVERY_SECONDS: Metric =
    histogram!("receiver_delivery_seconds", "relay send (sent_at) to the receiver holding the message");
pub const RECEIVER_BATCH_WAIT_SECONDS: Metric =
    histogram!("receiver_batch_wait_seconds", "message received to its batch's store beginning");
pub const RECEIVER_COMMIT_SECONDS: Metric =
    histogram!("receiver_commit_seconds", "batch store beginning to its commit returning");
pub const RECEIVER_BROKER_CONNECTED: Metric =
    gauge!("receiver_broker_connected", "1 when the receiver holds a live link");

pub const HTTP_REQUESTS: Metric = counter!("http_requests", "HTTP requests answered");
pub const HTTP_REQUEST_DURATION_SECONDS: Metric =
    histogram!("http_request_duration_seconds", "time to answer an HTTP request");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_with_the_suffix_they_are_exposed_with() {
        assert_eq!(OUTBOX_PUBLISHED.series, "outbox_published_total");
        assert_eq!(RECEIVER_PROCESSED.name, "receiver_processed");
        assert_eq!(OUTBOX_PENDING.series, OUTBOX_PENDING.name);
    }
}
