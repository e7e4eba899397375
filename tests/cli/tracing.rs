//! Traces cross every hop: a client's `traceparent` → the sender's HTTP span
//! → the outbox row → the relay's publish span → the AMQP message → the
//! receiver's processing span, all exported over OTLP (here to a small
//! collector in the test) because apphost passes `OTEL_*` to the services.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use serde_json::Value;

use crate::helpers::{ONE_STACK, Stack, apphost, endpoint};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_continues_from_the_request_into_the_receiver() {
    let _one = ONE_STACK.lock().await;
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let app = Router::new().route("/v1/traces", post(collect)).with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut stack = Stack::up_with(
        "process",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await;
    let t0 = std::time::Instant::now();
    let ps = stack.wait_healthy(Duration::from_secs(240)).await;
    eprintln!("healthy after {:?}", t0.elapsed());

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = reqwest::Client::new()
        .post(format!("{}/api/EntityItems", endpoint(&ps, "sender", "http")))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({ "name": "traced", "value": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let seen = spans.lock().unwrap().get(trace_id).cloned().unwrap_or_default();
        let has = |service: &str, name: &str| seen.iter().any(|(s, n)| s.contains(service) && n == name);
        if has("sender", "POST /api/EntityItems")
            && has("sender", "outbox publish")
            && has("receiver", "receiver process")
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
    eprintln!("trace {trace_id} after {:?}: {seen:?}", t0.elapsed());

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
    eprintln!("down returned after {:?}", t0.elapsed());
    stack.wait_exit(Duration::from_secs(90)).await;
    eprintln!("exited after {:?}", t0.elapsed());
}
