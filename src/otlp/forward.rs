//! Everything the receiver takes also goes on to an external collector
//! (Jaeger, an OpenTelemetry Collector, a vendor's endpoint): the target of
//! `--otlp-forward URL`, or the `OTEL_EXPORTER_OTLP_ENDPOINT` apphost itself
//! was started with (with its `_PROTOCOL` and `_HEADERS`). Forwarding never
//! slows the stack: requests wait in a bounded queue, and what does not fit
//! or is refused is counted, not retried forever.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsServiceRequest, logs_service_client::LogsServiceClient},
    trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Signal;

/// How the forwarder tells of trouble (apphost's own log).
pub type Say = Arc<dyn Fn(&str) + Send + Sync>;

/// Export requests waiting to be forwarded, at most.
const QUEUE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Where and how to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The base URL (`http://collector:4318`; gRPC: `http://collector:4317`).
    pub endpoint: String,
    pub protocol: Protocol,
    /// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,key=value` (an API key); never printed.
    pub headers: Vec<(String, String)>,
}

impl Target {
    /// From `--otlp-forward` or, when it is not given, apphost's own
    /// `OTEL_EXPORTER_OTLP_*` (`vars`); `None` when neither names one.
    pub fn choose(flag: Option<&str>, vars: &[(String, String)]) -> Result<Option<Self>, String> {
        let var = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
        let Some(endpoint) = flag.or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT")) else { return Ok(None) };
        let url = url::Url::parse(endpoint).map_err(|e| format!("the OTLP forward target `{endpoint}`: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("the OTLP forward target `{endpoint}` is not an http:// or https:// URL"));
        }
        let protocol = match var("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some("grpc") => Protocol::Grpc,
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL is `{other}`; apphost forwards with `grpc` or `http/protobuf`"
                ));
            }
        };
        let headers = var("OTEL_EXPORTER_OTLP_HEADERS")
            .map(|h| {
                h.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_owned(), percent_decode(v.trim())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Self { endpoint: endpoint.trim_end_matches('/').to_owned(), protocol, headers }))
    }

    /// What to show of it: no headers, no credentials in the URL.
    pub fn display(&self) -> String {
        let mut url = url::Url::parse(&self.endpoint).expect("checked when chosen");
        let _ = url.set_password(None);
        let _ = url.set_username("");
        let protocol = if self.protocol == Protocol::Grpc { "grpc" } else { "http/protobuf" };
        format!("{} ({protocol})", url.as_str().trim_end_matches('/'))
    }
}

fn percent_decode(v: &str) -> String {
    url::form_urlencoded::parse(format!("v={}", v.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

pub struct Forwarder {
    queue: mpsc::Sender<(Signal, Bytes)>,
    pub target: Target,
    pub forwarded: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
}

impl Forwarder {
    /// Starts the forwarding task; its first failure is said through `say`.
    pub fn start(target: Target, cancel: CancellationToken, say: Say) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let forwarded = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(target.clone(), rx, (forwarded.clone(), dropped.clone()), cancel, say));
        Self { queue, target, forwarded, dropped }
    }

    /// Queues one export request's protobuf bytes; counts it dropped when the queue is full.
    pub fn send(&self, signal: Signal, body: Bytes) {
        if self.queue.try_send((signal, body)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run(
    target: Target,
    mut rx: mpsc::Receiver<(Signal, Bytes)>,
    (forwarded, dropped): (Arc<AtomicU64>, Arc<AtomicU64>),
    cancel: CancellationToken,
    say: Say,
) {
    // An external collector: the system's proxy settings apply, as to any exporter.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client");
    let mut channel: Option<tonic::transport::Channel> = None;
    let mut said = false;
    loop {
        let (signal, body) = tokio::select! {
            _ = cancel.cancelled() => return,
            next = rx.recv() => match next { Some(n) => n, None => return },
        };
        let sent = match target.protocol {
            Protocol::HttpProtobuf => {
                let mut request = http
                    .post(format!("{}{}", target.endpoint, signal.path()))
                    .header("content-type", "application/x-protobuf")
                    .body(body);
                for (k, v) in &target.headers {
                    request = request.header(k, v);
                }
                match request.send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("answered {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
            Protocol::Grpc => grpc(&target, &mut channel, signal, body).await,
        };
        match sent {
            Ok(()) => {
                forwarded.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                dropped.fetch_add(1, Ordering::Relaxed);
                if !said {
                    say(&format!(
                        "telemetry: forwarding to {} failed ({e}); what fails is counted and dropped",
                        target.display()
                    ));
                    said = true;
                }
            }
        }
    }
}

async fn grpc(
    target: &Target,
    channel: &mut Option<tonic::transport::Channel>,
    signal: Signal,
    body: Bytes,
) -> Result<(), String> {
    if channel.is_none() {
        let endpoint = tonic::transport::Endpoint::from_shared(target.endpoint.clone())
            .map_err(|e| e.to_string())?
            .timeout(Duration::from_secs(10));
        *channel = Some(endpoint.connect().await.map_err(|e| e.to_string())?);
    }
    let ch = channel.clone().expect("connected");
    let result = match signal {
        Signal::Traces => {
            let request = ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())?;
            TraceServiceClient::new(ch)
                .export(with_headers(tonic::Request::new(request), &target.headers))
                .await
                .map(|_| ())
        }
        Signal::Logs => {
            let request = ExportLogsServiceRequest::decode(body).map_err(|e| e.to_string())?;
            LogsServiceClient::new(ch)
                .export(with_headers(tonic::Request::new(request), &target.headers))
                .await
                .map(|_| ())
        }
    };
    result.map_err(|status| {
        if status.code() == tonic::Code::Unavailable {
            *channel = None;
        }
        status.to_string()
    })
}

/// A gRPC request with the target's headers as metadata.
fn with_headers<T>(mut r: tonic::Request<T>, headers: &[(String, String)]) -> tonic::Request<T> {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
            tonic::metadata::MetadataValue::try_from(v.as_str()),
        ) {
            r.metadata_mut().insert(k, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_flag_wins_over_apphosts_own_endpoint_and_headers_are_kept_out_of_sight() {
        let env = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr%3Dt,x=y"),
        ]);
        let t = Target::choose(None, &env).unwrap().unwrap();
        assert_eq!((t.endpoint.as_str(), t.protocol), ("http://jaeger:4317", Protocol::Grpc));
        assert_eq!(t.headers, [("api-key".into(), "s3cr=t".into()), ("x".into(), "y".into())]);
        assert!(!t.display().contains("s3cr"));
        let t = Target::choose(Some("http://u:pw@collector:4318/"), &[]).unwrap().unwrap();
        assert_eq!(t.endpoint, "http://u:pw@collector:4318");
        assert_eq!(t.display(), "http://collector:4318 (http/protobuf)");
        assert_eq!(Target::choose(None, &[]).unwrap(), None);
        assert!(Target::choose(Some("collector:4318"), &[]).unwrap_err().contains("not an http"));
    }
}
