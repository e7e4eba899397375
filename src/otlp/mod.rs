//! apphost's OTLP receiver: what the stack's services export (traces and
//! logs), taken on loopback, kept in a bounded store for the dashboard, the
//! control API and the CLI, optionally journaled under `.apphost/` and
//! forwarded to an external collector.
//!
//! - [`server`]: gRPC and HTTP/protobuf on one port;
//! - [`convert`]: the official messages into what is kept;
//! - [`store`]: the bounded store and its sampling policy;
//! - [`journal`]: persistence across restarts of apphost;
//! - [`forward`]: the external collector.

use std::sync::{Arc, atomic::Ordering};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest};
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod convert;
pub mod forward;
pub mod journal;
mod server;
pub mod store;

pub use store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Logs,
}

/// How `up` runs the receiver.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Journal what is kept under `.apphost/telemetry/` and read it back at start.
    pub keep: bool,
    pub forward: Option<forward::Target>,
    pub budget: Option<usize>,
}

pub struct Receiver {
    pub store: Arc<Store>,
    journal: std::sync::Mutex<Option<journal::Journal>>,
    forward: Option<forward::Forwarder>,
    endpoint: String,
}

impl Receiver {
    /// Binds a loopback port and starts serving until `stop`. What it
    /// could not do (a journal that cannot be opened) it says through `say`
    /// and goes on without.
    pub async fn start(
        state: &std::path::Path,
        options: Options,
        stop: CancellationToken,
        say: forward::Say,
    ) -> std::io::Result<Arc<Self>> {
        let listener = TcpListener::bind((crate::loopback::ADDRESS, 0)).await?;
        let endpoint = format!("http://{}:{}", crate::loopback::ADDRESS, listener.local_addr()?.port());
        let budget = options.budget.unwrap_or(store::DEFAULT_BUDGET);
        let store = Arc::new(Store::new(budget));
        let journal = if options.keep {
            let dir = journal::dir(state);
            match journal::read(&dir) {
                Ok((spans, logs)) => {
                    let (n, m) = (spans.len(), logs.len());
                    store.restore_spans(spans);
                    store.restore_logs(logs);
                    if n + m > 0 {
                        say(&format!("telemetry: read back {n} spans and {m} log records from {}", dir.display()));
                    }
                }
                Err(e) => say(&format!("telemetry: not read back: {e}")),
            }
            // Each segment half the budget's worth of lines: the files stay near the store's size.
            match journal::Journal::open(&dir, budget as u64 / 2) {
                Ok(j) => Some(j),
                Err(e) => {
                    say(&format!("telemetry: not kept on disk ({}): {e}", dir.display()));
                    None
                }
            }
        } else {
            None
        };
        let forward = options.forward.map(|t| {
            say(&format!("telemetry: forwarding everything to {}", t.display()));
            forward::Forwarder::start(t, stop.clone(), say.clone())
        });
        let receiver = Arc::new(Self { store, journal: std::sync::Mutex::new(journal), forward, endpoint });
        let router = server::router(receiver.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
        });
        Ok(receiver)
    }

    /// `http://127.0.0.1:PORT`: gRPC and HTTP/protobuf alike.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What a process apphost starts is told, so that it exports here.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), self.endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into()),
        ]
    }

    pub fn stats(&self) -> dashboard::telemetry::Stats {
        let mut stats = self.store.stats();
        stats.endpoint = self.endpoint.clone();
        if let Some(f) = &self.forward {
            stats.forward = Some(f.target.display());
            stats.forwarded = f.forwarded.load(Ordering::Relaxed);
            stats.forward_dropped = f.dropped.load(Ordering::Relaxed);
        }
        stats
    }

    fn take_traces(&self, request: ExportTraceServiceRequest, raw: Option<Bytes>) {
        if let Some(f) = &self.forward {
            f.send(Signal::Traces, raw.unwrap_or_else(|| request.encode_to_vec().into()));
        }
        let (spans, refused) = convert::spans(request);
        if refused > 0 {
            self.store.note_rejected_request();
        }
        let kept = self.store.add_spans(spans);
        if let Some(j) = self.journal.lock().expect("journal").as_ref() {
            j.spans(&kept);
        }
    }

    fn take_logs(&self, request: ExportLogsServiceRequest, raw: Option<Bytes>) {
        if let Some(f) = &self.forward {
            f.send(Signal::Logs, raw.unwrap_or_else(|| request.encode_to_vec().into()));
        }
        let kept = self.store.add_logs(convert::logs(request));
        if let Some(j) = self.journal.lock().expect("journal").as_ref() {
            j.logs(&kept);
        }
    }

    /// Writes out what the journal holds; the receiver keeps serving from memory.
    pub fn close(&self) {
        if let Some(j) = self.journal.lock().expect("journal").take() {
            j.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry_proto::tonic::{
        collector::trace::v1::trace_service_client::TraceServiceClient,
        common::v1::{AnyValue, KeyValue, any_value::Value},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };

    use super::*;

    /// `traces` traces of five spans each (a POST's shape), ids unique per `batch`.
    fn request(batch: u64, traces: u64) -> ExportTraceServiceRequest {
        let spans = (0..traces)
            .flat_map(|t| {
                let trace_id = ((batch << 32) | (t + 1)).to_be_bytes().repeat(2);
                (1..=5u64).map(move |s| Span {
                    trace_id: trace_id.clone(),
                    span_id: (((batch << 32) | (t << 4)) + s).to_be_bytes().to_vec(),
                    parent_span_id: if s == 1 {
                        vec![]
                    } else {
                        (((batch << 32) | (t << 4)) + s - 1).to_be_bytes().to_vec()
                    },
                    name: "outbox publish".into(),
                    start_time_unix_nano: 1_000 * s,
                    end_time_unix_nano: 1_000 * s + 500,
                    ..Default::default()
                })
            })
            .collect();
        let service = KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue { value: Some(Value::StringValue("sender".into())) }),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![service], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_stays_bounded_under_a_flood_of_10k_spans_a_second_and_counts_what_it_let_go() {
        let stop = CancellationToken::new();
        let tmp = tempfile::tempdir().unwrap();
        let budget = 1024 * 1024;
        let options = Options { keep: false, forward: None, budget: Some(budget) };
        let receiver = Receiver::start(tmp.path(), options, stop.clone(), Arc::new(|_: &str| {})).await.unwrap();
        let http = reqwest::Client::new();
        let url = format!("{}/v1/traces", receiver.endpoint());
        let mut grpc = TraceServiceClient::connect(receiver.endpoint().to_owned()).await.unwrap();
        // 10,000 spans a second for 3 s: a batch of 200 five-span traces every 100 ms,
        // over HTTP/protobuf and gRPC in turn.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for batch in 0..30 {
            tick.tick().await;
            let request = request(batch, 200);
            if batch % 2 == 0 {
                let r = http.post(&url).header("content-type", "application/x-protobuf").body(request.encode_to_vec());
                assert!(r.send().await.unwrap().status().is_success());
            } else {
                grpc.export(request).await.unwrap();
            }
        }
        let s = receiver.stats();
        assert_eq!(s.spans_received, 30_000);
        assert!(s.bytes <= budget, "{} bytes held, budget {budget}", s.bytes);
        assert!(s.spans_sampled_out > 20_000, "most of 6,000 traces in 3 s are sampled out: {s:?}");
        assert!(s.spans_evicted > 0, "a 1 MiB store fills and lets the oldest go: {s:?}");
        assert_eq!(
            s.spans as u64 + s.spans_sampled_out + s.spans_evicted,
            s.spans_received,
            "every span accounted for"
        );
        let kept = receiver.store.traces(&Default::default(), usize::MAX);
        assert!(kept.iter().all(|t| t.spans == 5), "kept traces are whole");

        // What is not an export request is refused and counted; gzip is taken.
        let refused =
            http.post(&url).header("content-type", "application/x-protobuf").body("not protobuf").send().await;
        assert_eq!(refused.unwrap().status(), 400);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &request(99, 1).encode_to_vec()).unwrap();
        let zipped = http
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "gzip")
            .body(gz.finish().unwrap())
            .send()
            .await;
        assert!(zipped.unwrap().status().is_success());
        let s = receiver.stats();
        assert_eq!((s.rejected_requests, s.spans_received), (1, 30_005));
        stop.cancel();
    }
}
