//! Logs to stdout, and traces and logs over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set: each tracing event also becomes an OTLP log record carrying the
//! trace and span it happened in; the stdout lines stay as they are.
//!
//! Traces cross process boundaries as W3C `traceparent` strings: the sender
//! stores one with each outbox row, the relay puts it on the AMQP message, the
//! receiver continues from it. [`traceparent`] and [`continue_from`] are the
//! two ends of that.

use std::collections::HashMap;

use opentelemetry::{
    Context,
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::{LogExporter, SpanExporter};
use opentelemetry_sdk::{
    Resource,
    logs::{SdkLoggerProvider, log_processor_with_async_runtime::BatchLogProcessor},
    propagation::TraceContextPropagator,
    runtime,
    trace::{SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Flushes exported spans when the service stops; keep it alive in `main`.
#[must_use = "spans are lost unless the guard lives until shutdown"]
pub struct Telemetry {
    provider: Option<(SdkTracerProvider, SdkLoggerProvider)>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some((traces, logs)) = self.provider {
            if let Err(err) = traces.shutdown() {
                eprintln!("flushing traces failed: {err}");
            }
            if let Err(err) = logs.shutdown() {
                eprintln!("flushing log records failed: {err}");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("`OTEL_EXPORTER_OTLP_PROTOCOL` is `{0}`; expected `grpc` or `http/protobuf`")]
    Protocol(String),
    #[error("cannot build the OTLP exporter for `OTEL_EXPORTER_OTLP_ENDPOINT`: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Installs the global subscriber. `RUST_LOG` filters (default `info`),
/// `LOG_FORMAT=json` writes one JSON object a line for machines.
/// Must run inside the Tokio runtime (the span exporter lives on it).
pub fn init(service_name: &str) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,fe2o3_amqp=warn,tower_http=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fmt_text = (!json).then(|| tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi));
    let fmt_json = json.then(|| tracing_subscriber::fmt::layer().json().flatten_event(true));

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => Some(providers(service_name)?),
        _ => None,
    };
    let otel =
        provider.as_ref().map(|(p, _)| tracing_opentelemetry::layer().with_tracer(p.tracer(service_name.to_owned())));
    // What the exporters themselves log (HTTP/2, gRPC, the SDK) never becomes a
    // record to export: that would feed itself.
    let records = provider.as_ref().map(|(_, logs)| {
        OpenTelemetryTracingBridge::new(logs)
            .with_filter(EnvFilter::new("trace,hyper=off,hyper_util=off,h2=off,tonic=off,reqwest=off,tower=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,opentelemetry_http=off"))
    });

    // A second init (tests start several services in one process) keeps the first.
    let _ =
        tracing_subscriber::registry().with(filter).with(fmt_text).with(fmt_json).with(otel).with(records).try_init();
    Ok(Telemetry { provider })
}

fn providers(service_name: &str) -> Result<(SdkTracerProvider, SdkLoggerProvider), TelemetryError> {
    // The exporters read the endpoint, headers and timeout from `OTEL_*` themselves.
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_default();
    let (spans, records) = match protocol.as_str() {
        "grpc" => (SpanExporter::builder().with_tonic().build()?, LogExporter::builder().with_tonic().build()?),
        "" | "http/protobuf" => {
            (SpanExporter::builder().with_http().build()?, LogExporter::builder().with_http().build()?)
        }
        other => return Err(TelemetryError::Protocol(other.to_owned())),
    };
    // `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` win over the default name.
    let resource = Resource::builder().with_service_name(service_name.to_owned()).build();
    let processor = BatchSpanProcessor::builder(spans, runtime::Tokio).build();
    let traces = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource.clone()).build();
    let processor = BatchLogProcessor::builder(records, runtime::Tokio).build();
    let logs = SdkLoggerProvider::builder().with_log_processor(processor).with_resource(resource).build();
    Ok((traces, logs))
}

/// The W3C `traceparent` of a span, when tracing is on and the span is sampled.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span named by `traceparent`.
pub fn continue_from(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent: Context = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The trace id of a `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1).filter(|id| id.len() == 32)
}
