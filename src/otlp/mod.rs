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
