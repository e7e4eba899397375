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
    trace::{
        Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample,
        span_processor_with_async_runtime::BatchSpanProcessor,
    },
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

/// What the libraries log unless `RUST_LOG` names them, as Aspire's defaults keep
/// `Microsoft.AspNetCore` at `Warning` whatever `Default` says: at `info` the AMQP
/// client makes a span of every frame it sends or receives, which every layer of
/// the subscriber pays for, under load thousands a second no one reads.
pub const LIBRARIES: &str = "sqlx=warn,fe2o3_amqp=warn,tower_http=warn";

/// The log filter: [`LIBRARIES`], then `rust_log` (default `info`), whose
/// directive for a library replaces the default one.
pub fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    let rust_log = rust_log.map(str::trim).filter(|v| !v.is_empty()).unwrap_or("info");
    EnvFilter::try_new(format!("{LIBRARIES},{rust_log}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("{LIBRARIES},info")))
}

/// Installs the global subscriber. `RUST_LOG` filters ([`log_filter`]),
/// `LOG_FORMAT=json` writes one JSON object a line for machines.
/// Must run inside the Tokio runtime (the span exporter lives on it).
pub fn init(service_name: &str) -> Result<Telemetry, TelemetryError> {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fmt_text = (!json).then(|| tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi));
    let fmt_json = json.then(|| tracing_subscriber::fmt::layer().json().flatten_event(true));

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => Some(providers(service_name)?),
        _ => None,
    };
    // The libraries' own spans (the AMQP client's per-frame `on_incoming`, `on_control`…) are not
    // exported whatever RUST_LOG enables: three spans a disposition cost more than the message.
    let otel = provider.as_ref().map(|(p, _)| {
        tracing_opentelemetry::layer().with_tracer(p.tracer(service_name.to_owned())).with_filter(EnvFilter::new(
            "trace,fe2o3_amqp=off,fe2o3_amqp_types=off,serde_amqp=off,sqlx=off,hyper=off,hyper_util=off,h2=off,tonic=off,reqwest=off,tower=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off",
        ))
    });
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
    let mut traces = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource.clone());
    // `OTEL_TRACES_SAMPLER` (and `_ARG`), when set, are the SDK's to read; else at most
    // ROOTS_PER_SECOND new traces a second, each continued wherever it goes.
    if std::env::var_os("OTEL_TRACES_SAMPLER").is_none() {
        let roots = RateLimited::new(roots_per_second());
        let _ = DOOR.set(Door(roots.clone()));
        traces = traces.with_sampler(Sampler::ParentBased(Box::new(roots)));
    }
    let traces = traces.build();
    let processor = BatchLogProcessor::builder(records, runtime::Tokio).build();
    let logs = SdkLoggerProvider::builder().with_log_processor(processor).with_resource(resource).build();
    Ok((traces, logs))
}

/// New traces a second a service starts unless `OTEL_TRACES_SAMPLER` says
/// otherwise (`APPHOST_TRACES_PER_SECOND` changes it): every request of a
/// developer's is traced, a load's cost stays bounded.
pub const ROOTS_PER_SECOND: f64 = 100.0;

fn roots_per_second() -> f64 {
    std::env::var("APPHOST_TRACES_PER_SECOND").ok().and_then(|v| v.parse().ok()).unwrap_or(ROOTS_PER_SECOND)
}

/// Where a request's trace is decided before its span is made, when spans are
/// exported and the sampler is [`RateLimited`]: the layer that exports spans
/// pays for every span it sees, sampled or not (its attributes, its clock
/// reads and context switches at each poll, an OpenTelemetry span built and
/// dropped), so a request whose trace is not sampled is better without one.
static DOOR: std::sync::OnceLock<Door> = std::sync::OnceLock::new();

/// Admits a request's span, or turns it away, sharing the sampler's bucket.
#[derive(Debug)]
pub struct Door(RateLimited);

impl Door {
    /// A request continuing a trace follows that trace's decision; one starting a
    /// trace takes a token, and the sampler then samples it without another
    /// (a server span at the root: see [`RateLimited`]).
    pub fn admits(&self, traceparent: Option<&str>) -> bool {
        match traceparent.filter(|t| trace_id_of(t).is_some()) {
            Some(traceparent) => sampled(traceparent),
            None => self.0.take(),
        }
    }
}

#[cfg(test)]
impl Door {
    pub(crate) fn with_rate(per_second: f64) -> Self {
        Self(RateLimited::new(per_second))
    }
}

/// The door requests pass before their span is made: none (every request gets
/// its span) unless spans are exported under [`RateLimited`].
pub fn door() -> Option<&'static Door> {
    DOOR.get()
}

/// Samples a new trace while a token is free: a bucket of `per_second`
/// tokens a second, holding up to twice that (bursts pass). Under
/// `Sampler::ParentBased` it decides only for roots; a span with a parent
/// (a caller's `traceparent`, an outbox row's) follows the parent. A server
/// span at the root took its token at the [`Door`], so it is sampled as it is.
#[derive(Debug, Clone)]
pub struct RateLimited {
    per_second: f64,
    bucket: std::sync::Arc<std::sync::Mutex<(f64, std::time::Instant)>>,
}

impl RateLimited {
    pub fn new(per_second: f64) -> Self {
        let bucket = (per_second * 2.0, std::time::Instant::now());
        Self { per_second, bucket: std::sync::Arc::new(std::sync::Mutex::new(bucket)) }
    }

    fn take(&self) -> bool {
        let mut bucket = self.bucket.lock().expect("sampler bucket");
        let now = std::time::Instant::now();
        let (tokens, then) = *bucket;
        let tokens = (tokens + now.duration_since(then).as_secs_f64() * self.per_second).min(self.per_second * 2.0);
        let taken = tokens >= 1.0;
        *bucket = (if taken { tokens - 1.0 } else { tokens }, now);
        taken
    }
}

impl ShouldSample for RateLimited {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        _trace_id: opentelemetry::trace::TraceId,
        _name: &str,
        kind: &opentelemetry::trace::SpanKind,
        _attributes: &[opentelemetry::KeyValue],
        _links: &[opentelemetry::trace::Link],
    ) -> SamplingResult {
        let admitted = *kind == opentelemetry::trace::SpanKind::Server || self.take();
        let decision = if admitted { SamplingDecision::RecordAndSample } else { SamplingDecision::Drop };
        let trace_state = parent.map(|p| p.span().span_context().trace_state().clone()).unwrap_or_default();
        SamplingResult { decision, attributes: Vec::new(), trace_state }
    }
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

/// Whether a `traceparent` says its trace is sampled (flags bit 0): what is
/// not is not worth a span of its own further down the way.
pub fn sampled(traceparent: &str) -> bool {
    traceparent.rsplit('-').next().and_then(|f| u8::from_str_radix(f, 16).ok()).is_some_and(|f| f & 1 == 1)
}

/// The trace id of a `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1).filter(|id| id.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_says_whether_it_is_sampled() {
        assert!(sampled("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!sampled("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        assert!(!sampled("garbage"));
    }

    #[test]
    fn rust_log_keeps_the_libraries_at_warn_unless_it_names_them() {
        use tracing::Level;
        let on = |rust_log: Option<&str>, check: fn() -> bool| {
            tracing::subscriber::with_default(tracing_subscriber::registry().with(log_filter(rust_log)), check)
        };
        let frames = || tracing::enabled!(target: "fe2o3_amqp::transport", Level::INFO);
        let frames_debug = || tracing::enabled!(target: "fe2o3_amqp::transport", Level::DEBUG);
        let own = || tracing::enabled!(target: "sender::routes", Level::INFO);
        let own_debug = || tracing::enabled!(target: "sender::routes", Level::DEBUG);
        assert!(!on(Some("info"), frames), "RUST_LOG=info: the AMQP client's frames stay out");
        assert!(on(Some("info"), own));
        assert!(!on(None, frames));
        assert!(on(None, own));
        assert!(!on(None, own_debug));
        assert!(on(Some("debug"), own_debug));
        assert!(!on(Some("debug"), frames));
        assert!(on(Some("info,fe2o3_amqp=debug"), frames_debug), "named, the library logs as RUST_LOG says");
        assert!(on(Some("[bad"), own), "a filter that does not parse falls back to info");
    }

    #[test]
    fn the_door_follows_a_callers_decision_and_rate_limits_the_traces_it_starts() {
        let door = Door::with_rate(1.0);
        // A burst of twice the rate, then none (but a token a second that passed meanwhile).
        let began = std::time::Instant::now();
        let started = (0..10).filter(|_| door.admits(None)).count();
        assert!((2..=2 + began.elapsed().as_secs() as usize).contains(&started), "{started} started");
        // A door that never has a token: a continued trace takes none.
        let shut = Door::with_rate(1e-9);
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let not = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!Door::with_rate(1000.0).admits(Some(not)));
        assert!(!shut.admits(None));
        assert!(!shut.admits(Some("garbage")), "a traceparent that names no trace starts one");
        assert!(shut.admits(Some(sampled)));
    }

    #[test]
    fn a_server_span_at_the_root_is_sampled_without_a_second_token() {
        use opentelemetry::trace::{SpanKind, TraceId};
        // No token ever: a burst of 2e-9.
        let sampler = RateLimited::new(1e-9);
        let decide = |kind: SpanKind| sampler.should_sample(None, TraceId::from(1), "s", &kind, &[], &[]).decision;
        assert!(matches!(decide(SpanKind::Server), SamplingDecision::RecordAndSample));
        assert!(matches!(decide(SpanKind::Internal), SamplingDecision::Drop));
    }

    #[test]
    fn the_sampler_takes_a_burst_then_its_rate() {
        let sampler = RateLimited::new(100.0);
        let taken = (0..1000).filter(|_| sampler.take()).count();
        assert!((200..=201).contains(&taken), "a burst of twice the rate: {taken}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let again = (0..1000).filter(|_| sampler.take()).count();
        assert!((9..=12).contains(&again), "about 100/s: {again} in 100 ms");
    }
}
