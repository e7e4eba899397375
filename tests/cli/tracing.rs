//! Traces cross every hop: a client's `traceparent` → the sender's HTTP span
//! → its transaction → the outbox row → the relay's publish span → the AMQP
//! message → the receiver's processing and commit spans, all exported over
//! OTLP to apphost's receiver, kept there across a restart, and forwarded
//! on to a second receiver (a small collector in the test), because the
//! `OTEL_EXPORTER_OTLP_ENDPOINT` apphost was started with is its forward target.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use serde_json::Value;

use crate::helpers::{ONE_STACK, Stack, StateDir, apphost, endpoint};

/// (service.name, span name) of every span, by trace id (hex).
type Spans = Arc<Mutex<HashMap<String, Vec<(String, String)>>>>;

async fn collect(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
    if let Ok(request) = ExportTraceServiceRequest::decode(body) {
        let mut spans = spans.lock().unwrap();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    spans.entry(trace).or_default().push((service.clone(), span.name));
                }
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

/// What `apphost` prints for `args`, as JSON.
async fn json(state: &std::path::Path, args: &[&str]) -> Value {
    let out = apphost(state).args(args).output().await.unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The five spans of a POST, each the child of the one before (the first of
/// the client's span), across the sender and the receiver; `Err` says what is not so yet.
fn whole(trace: &Value, client_span: &str) -> Result<(), String> {
    let spans = trace["spans"].as_array().ok_or("no spans")?;
    let find = |name: &str| spans.iter().find(|s| s["name"] == name).ok_or(format!("no `{name}` span in {spans:?}"));
    let chain = [
        ("POST /api/EntityItems", "sender"),
        ("outbox insert", "sender"),
        ("outbox publish", "sender"),
        ("receiver process", "receiver"),
        ("receiver commit", "receiver"),
    ];
    let mut parent = client_span.to_owned();
    for (name, resource) in chain {
        let span = find(name)?;
        if span["resource"] != resource || span["parent_id"] != parent.as_str() {
            return Err(format!("`{name}`: {span} is not {resource}'s child of {parent}"));
        }
        parent = span["span_id"].as_str().unwrap_or_default().to_owned();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posts_trace_arrives_whole_in_apphost_and_at_the_forward_target_and_survives_a_restart() {
    let _one = ONE_STACK.lock().await;
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let app = Router::new().route("/v1/traces", post(collect)).with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // apphost's own OTLP endpoint (the test's collector) becomes where everything is forwarded.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
        ("RUST_LOG", "info,sender=debug,receiver=debug"),
    ];
    let mut stack = Stack::up_in(StateDir::new(), "process", &env, &["--keep-telemetry"]).await;
    let t0 = std::time::Instant::now();
    let ps = stack.wait_healthy(Duration::from_secs(240)).await;
    eprintln!("healthy after {:?}", t0.elapsed());

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let response = reqwest::Client::new()
        .post(format!("{}/api/EntityItems", endpoint(&ps, "sender", "http")))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(&serde_json::json!({ "name": "traced", "value": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();

    // In apphost's own receiver: the whole trace, its parentage across the four stages.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let trace = json(&stack.state, &["trace", trace_id, "--json"]).await;
        match whole(&trace, client_span) {
            Ok(()) => break,
            Err(why) => assert!(tokio::time::Instant::now() < deadline, "{why}\n{}", stack.output()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("trace {trace_id} whole in apphost after {:?}", t0.elapsed());
    let text = apphost(&stack.state).args(["trace", trace_id]).output().await.unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    // A wait is named where the next stage began after the one before ended: the relay
    // after the transaction (it is woken only then, unless its own poll found the row
    // first), the receiver after the relay saw `Accepted` (the broker may deliver first).
    let trace = json(&stack.state, &["trace", trace_id, "--json"]).await;
    let span = |name: &str| trace["spans"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone();
    let after = |later: &str, earlier: &str| {
        span(later)["start_unix_nano"].as_u64().unwrap() > span(earlier)["end_unix_nano"].as_u64().unwrap()
    };
    assert_eq!(text.contains("waiting in the outbox"), after("outbox publish", "outbox insert"), "{text}");
    assert_eq!(text.contains("in the broker"), after("receiver process", "outbox publish"), "{text}");
    let listed = json(&stack.state, &["traces", "--resource", "receiver", "--json"]).await;
    assert!(listed.as_array().unwrap().iter().any(|t| t["trace_id"] == trace_id), "{listed}");

    // The receiver's log record of the item carries its trace id (the demo's sender
    // logs at `info`, set in apphost.yaml; the receiver takes RUST_LOG from here).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out =
            apphost(&stack.state).args(["logs", "--structured", "--trace", trace_id, "--json"]).output().await.unwrap();
        let records: Vec<Value> =
            String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let from = |r: &str| records.iter().any(|x| x["resource"] == r && x["trace_id"] == trace_id);
        if from("receiver") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "records of {trace_id}: {records:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // And at the forward target, the collector this test runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let seen = spans.lock().unwrap().get(trace_id).cloned().unwrap_or_default();
        let has = |service: &str, name: &str| seen.iter().any(|(s, n)| s.contains(service) && n == name);
        if has("sender", "POST /api/EntityItems")
            && has("sender", "outbox insert")
            && has("sender", "outbox publish")
            && has("receiver", "receiver process")
            && has("receiver", "receiver commit")
        {
            break seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans of trace {trace_id}: {seen:?}\nall traces: {:?}",
            spans.lock().unwrap().keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("trace {trace_id} forwarded after {:?}: {seen:?}", t0.elapsed());

    // The receiver stored the item under the same trace.
    let stored = reqwest::get(format!(
        "{}/api/EntityItems/{}",
        endpoint(&ps, "receiver", "http"),
        created["id"].as_str().unwrap()
    ))
    .await
    .unwrap();
    assert_eq!(stored.status(), 200);

    apphost(&stack.state).arg("down").output().await.unwrap();
    stack.wait_exit(Duration::from_secs(90)).await;
    eprintln!("down after {:?}", t0.elapsed());

    // With no app running, the CLI reads what was kept; the next `up` reads it back.
    whole(&json(&stack.state, &["trace", trace_id, "--json"]).await, client_span).expect("kept after down");
    let Stack { state, .. } = stack;
    let mut again = Stack::up_in(state, "process", &[], &["--keep-telemetry"]).await;
    again.wait_healthy(Duration::from_secs(240)).await;
    let live = json(&again.state, &["trace", trace_id, "--json"]).await;
    whole(&live, client_span).expect("read back by the next up");
    assert!(again.output().contains("telemetry: read back"), "{}", again.output());
    apphost(&again.state).arg("down").output().await.unwrap();
    again.wait_exit(Duration::from_secs(90)).await;
    eprintln!("restarted and down after {:?}", t0.elapsed());
}
