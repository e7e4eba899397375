//! From the official OTLP messages (`opentelemetry-proto`) to what the store
//! keeps. Whatever a client sends is cut to size here: names, attribute
//! values and counts have limits, ids of the wrong length are refused, so one
//! hostile export cannot take the store's budget in a single span.

use dashboard::telemetry::{Level, LogRecord, Span, SpanKind};
use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
};

/// Attributes kept of a span or record; the rest are dropped.
const MAX_ATTRIBUTES: usize = 32;
/// Characters kept of a value, a name or a body.
const MAX_VALUE: usize = 1024;
const MAX_BODY: usize = 8192;

/// What an export request came to: the spans, and how many were refused.
pub fn spans(request: ExportTraceServiceRequest) -> (Vec<Span>, usize) {
    let mut out = Vec::new();
    let mut refused = 0;
    for rs in request.resource_spans {
        let resource = service_name(rs.resource.as_ref());
        for ss in rs.scope_spans {
            for s in ss.spans {
                let (Some(trace_id), Some(span_id)) = (hex_id(&s.trace_id, 16), hex_id(&s.span_id, 8)) else {
                    refused += 1;
                    continue;
                };
                let error = s
                    .status
                    .as_ref()
                    .filter(|st| st.code == 2)
                    .map(|st| if st.message.is_empty() { "error".to_owned() } else { cut(&st.message, MAX_VALUE) });
                out.push(Span {
                    trace_id,
                    span_id,
                    parent_id: hex_id(&s.parent_span_id, 8),
                    name: cut(&s.name, 256),
                    resource: resource.clone(),
                    kind: SpanKind::from_otlp(s.kind),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano.max(s.start_time_unix_nano),
                    error,
                    attributes: attributes(&s.attributes),
                });
            }
        }
    }
    (out, refused)
}

/// The log records of an export request (numbered by the store).
pub fn logs(request: ExportLogsServiceRequest) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for rl in request.resource_logs {
        let resource = service_name(rl.resource.as_ref());
        for sl in rl.scope_logs {
            for r in sl.log_records {
                let at = if r.time_unix_nano != 0 { r.time_unix_nano } else { r.observed_time_unix_nano };
                out.push(LogRecord {
                    seq: 0,
                    at_unix_nano: at,
                    resource: resource.clone(),
                    level: Level::from_otlp(r.severity_number, &r.severity_text),
                    body: r.body.as_ref().map(|b| cut(&value(b), MAX_BODY)).unwrap_or_default(),
                    attributes: attributes(&r.attributes),
                    trace_id: hex_id(&r.trace_id, 16),
                    span_id: hex_id(&r.span_id, 8),
                });
            }
        }
    }
    out
}

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .map(|v| cut(&value(v), 128))
        .unwrap_or_else(|| "unknown_service".to_owned())
}

fn attributes(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .take(MAX_ATTRIBUTES)
        .map(|kv| (cut(&kv.key, 128), kv.value.as_ref().map(|v| cut(&value(v), MAX_VALUE)).unwrap_or_default()))
        .collect()
}

/// A value as text: strings as they are, the rest as JSON would show them.
fn value(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => to_hex(&b[..b.len().min(MAX_VALUE / 2)]),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().take(MAX_ATTRIBUTES).map(value).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .take(MAX_ATTRIBUTES)
                .map(|kv| format!("{}={}", kv.key, kv.value.as_ref().map(value).unwrap_or_default()))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        // A dictionary index (profiles): no dictionary here.
        Some(Value::StringValueStrindex(i)) => format!("#{i}"),
        None => String::new(),
    }
}

/// Lowercase hex of an id of `len` bytes; `None` when empty, all zero or the wrong length.
fn hex_id(bytes: &[u8], len: usize) -> Option<String> {
    (bytes.len() == len && bytes.iter().any(|b| *b != 0)).then(|| to_hex(bytes))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// At most `max` characters of `s`, marked when cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, KeyValue, any_value::Value},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan, Status},
    };

    use super::*;

    fn kv(key: &str, v: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }

    #[test]
    fn a_span_takes_its_service_from_the_resource_and_bad_ids_are_refused() {
        let good = ProtoSpan {
            trace_id: vec![0xab; 16],
            span_id: vec![1; 8],
            parent_span_id: vec![],
            name: "x".repeat(1000),
            kind: 4,
            start_time_unix_nano: 10,
            end_time_unix_nano: 5,
            attributes: (0..100).map(|i| kv(&format!("k{i}"), "v")).collect(),
            status: Some(Status { message: String::new(), code: 2 }),
            ..Default::default()
        };
        let bad = ProtoSpan { trace_id: vec![1; 3], span_id: vec![1; 8], ..Default::default() };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("service.name", "sender")], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans: vec![good, bad], ..Default::default() }],
                ..Default::default()
            }],
        };
        let (spans, refused) = spans(request);
        assert_eq!(refused, 1);
        let s = &spans[0];
        assert_eq!((s.resource.as_str(), s.kind, s.parent_id.as_deref()), ("sender", SpanKind::Producer, None));
        assert_eq!(s.trace_id, "ab".repeat(16));
        assert_eq!(s.end_unix_nano, 10, "an end before the start is the start");
        assert_eq!(s.name.chars().count(), 257);
        assert_eq!(s.attributes.len(), MAX_ATTRIBUTES);
        assert_eq!(s.error.as_deref(), Some("error"));
    }
}
