//! OTLP on one loopback port: gRPC (`TraceService`, `LogsService`, served by
//! the code `opentelemetry-proto` generates) and HTTP (`POST /v1/traces`,
//! `/v1/logs`; protobuf or JSON, plain or gzip) side by side, as HTTP/1.1 and
//! HTTP/2 on the same listener.

use std::{io::Read, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use prost::Message;

use super::{Receiver, Signal};

/// The largest export body taken, compressed or not (exporters send a few
/// hundred KB at most); what a gzip body inflates to is bounded the same way.
const MAX_BODY: usize = 8 * 1024 * 1024;

pub fn router(receiver: Arc<Receiver>) -> Router {
    let grpc = Grpc(receiver.clone());
    let http = Router::new()
        .route("/v1/traces", post(http_traces))
        .route("/v1/logs", post(http_logs))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(receiver);
    tonic::service::Routes::new(TraceServiceServer::new(grpc.clone()).max_decoding_message_size(MAX_BODY))
        .add_service(LogsServiceServer::new(grpc).max_decoding_message_size(MAX_BODY))
        .into_axum_router()
        .merge(http)
}

#[derive(Clone)]
struct Grpc(Arc<Receiver>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take_traces(request.into_inner(), None);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.take_logs(request.into_inner(), None);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

async fn http_traces(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    http_export(&receiver, &headers, body, Receiver::take_traces, ExportTraceServiceResponse::default())
}

async fn http_logs(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    http_export(&receiver, &headers, body, Receiver::take_logs, ExportLogsServiceResponse::default())
}

/// One HTTP export: decoded and taken by `take`, answered with `response`
/// in the request's encoding; refused (and counted) when it does not decode.
fn http_export<Q, A>(
    receiver: &Receiver,
    headers: &HeaderMap,
    body: Bytes,
    take: fn(&Receiver, Q, Option<Bytes>),
    response: A,
) -> Response
where
    Q: Message + Default + serde::de::DeserializeOwned,
    A: Message + serde::Serialize,
{
    match decode::<Q>(headers, body) {
        Ok((request, raw, json)) => {
            take(receiver, request, raw);
            answer(&response, json)
        }
        Err(refusal) => {
            receiver.store.note_rejected_request();
            refusal.into_response()
        }
    }
}

/// The request, its protobuf bytes when it came as protobuf (forwarded as
/// they are), and whether it came as JSON (answered the same way).
fn decode<M: Message + Default + serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(M, Option<Bytes>, bool), (StatusCode, String)> {
    let body = match headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        None | Some("identity") => body,
        Some("gzip") => {
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("the gzip body does not inflate: {e}")))?;
            if inflated.len() > MAX_BODY {
                return Err((StatusCode::PAYLOAD_TOO_LARGE, format!("the body inflates past {MAX_BODY} bytes")));
            }
            Bytes::from(inflated)
        }
        Some(other) => {
            return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("Content-Encoding `{other}`: send gzip or none")));
        }
    };
    let kind = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/x-protobuf");
    if kind.starts_with("application/json") {
        let request = serde_json::from_slice(&body)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("not an OTLP/JSON export request: {e}")))?;
        Ok((request, None, true))
    } else if kind.starts_with("application/x-protobuf") || kind.starts_with("application/protobuf") {
        let request = M::decode(&body[..])
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("not an OTLP/protobuf export request: {e}")))?;
        Ok((request, Some(body), false))
    } else {
        Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type `{kind}`: send application/x-protobuf or application/json"),
        ))
    }
}

fn answer<M: Message + serde::Serialize>(response: &M, json: bool) -> Response {
    if json {
        ([(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(response).unwrap_or_default()).into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/x-protobuf")], response.encode_to_vec()).into_response()
    }
}

impl Signal {
    pub fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
        }
    }
}
