//! HTTP pieces every service serves the same way: RFC 9457 problem details,
//! `/health/live`, `/health/ready`, `/metrics`, request metrics, and a server
//! that binds with a clear error and stops gracefully.

use std::{collections::BTreeMap, future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Instant};

use axum::{
    BoxError, Json, Router,
    error_handling::HandleErrorLayer,
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer};

use crate::metrics::{HttpLabels, HttpMetrics, Metrics};

/// An `application/problem+json` body (RFC 9457). `errors` maps a field name
/// to what is wrong with it, as ASP.NET's validation problems do.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, Vec<String>>,
}

impl Problem {
    pub fn new(status: StatusCode, title: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            errors: BTreeMap::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Names a field of the request and what is wrong with it.
    pub fn field(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.errors.entry(field.into()).or_default().push(message.into());
        self
    }

    /// A 400 about one field, the most common answer to bad input.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "one or more fields are invalid").field(field, message)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Serves at most `limit` of `router`'s requests at a time (one count for
/// all its routes) and refuses the next at once: 503, `Retry-After: 1`,
/// nothing done. Overload then shows as fast refusals a client can retry,
/// not as requests queueing for a database connection until they time out
/// while the queue grows and every answer gets slower.
pub fn shed_beyond<S: Clone + Send + Sync + 'static>(router: Router<S>, limit: usize) -> Router<S> {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |_: BoxError| async move {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the service is at capacity")
                    .detail(format!("{limit} requests are in progress; nothing was done, retry after 1 s"))
            }))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(limit)),
    )
}

/// The answer to a path no route knows.
pub async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no such resource")
}

/// What `/health/ready` reports: whether the service can do its job, and why.
pub struct Readiness {
    pub ready: bool,
    pub details: serde_json::Value,
}

pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Readiness> + Send>> + Send + Sync>;

/// `/health/live`, `/health/ready` and `/metrics`.
pub fn health_routes(metrics: Metrics, ready: ReadinessCheck) -> Router {
    Router::new()
        .route("/health/live", get(|| async { Json(serde_json::json!({ "status": "Healthy" })) }))
        .route(
            "/health/ready",
            get(move || {
                let ready = ready.clone();
                async move {
                    let report = ready().await;
                    let status = if report.ready { "Healthy" } else { "Unhealthy" };
                    let code = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    let mut body = serde_json::json!({ "status": status });
                    if let (Some(body), serde_json::Value::Object(details)) = (body.as_object_mut(), report.details) {
                        body.extend(details);
                    }
                    (code, Json(body))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                        metrics.render(),
                    )
                }
            }),
        )
}

/// Middleware: counts and times every request by method, matched route and status.
pub async fn track_requests(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = HttpLabels { method, route, status: response.status().as_u16() };
    metrics.requests.get_or_create(&labels).inc();
    metrics.duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "port {port} is already in use; stop what listens there or set `PORT` to another port (0 picks a free one)"
    )]
    InUse { port: u16 },
    #[error("cannot listen on {addr}: {source}")]
    Other { addr: SocketAddr, source: std::io::Error },
}

/// Binds the service's port on `host` (from `HOST`, default all interfaces so
/// the same binary works in a container), naming the fix when the port is taken.
pub async fn bind(host: std::net::IpAddr, port: u16) -> Result<TcpListener, BindError> {
    let addr = SocketAddr::new(host, port);
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            BindError::InUse { port }
        } else {
            BindError::Other { addr, source }
        }
    })
}

/// Serves until `cancel` fires, then lets in-flight requests finish.
pub async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(async move { cancel.cancelled().await }).await
}

/// The span of one HTTP request, continuing the caller's trace when the
/// request carries a `traceparent` header. For `TraceLayer::make_span_with`.
/// Health probes and metrics scrapes get none (as Aspire's service defaults
/// filter them): twice a second each, they would bury the traces that matter.
pub fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path().to_owned(), |p| p.as_str().to_owned());
    if route.starts_with("/health") || route == "/metrics" {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "http request",
        otel.name = %format!("{} {}", request.method(), route),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok());
    crate::telemetry::continue_from(&span, traceparent);
    span
}

/// `SERVICE --health-check`: asks the service running beside it (on `PORT`,
/// or `default_port`, on loopback) for `/health/ready` and exits 0 when it
/// answers 200, 1 otherwise (why on stderr). For container healthchecks in
/// images without curl.
pub fn health_check(env: &impl crate::config::Env, default_port: u16) -> std::process::ExitCode {
    use std::{
        io::{Read, Write},
        net::{Ipv4Addr, TcpStream},
        process::ExitCode,
        time::Duration,
    };
    let port = match crate::config::http_port(env, default_port) {
        Ok(port) => port,
        Err(e) => {
            eprintln!("health check: {e}");
            return ExitCode::FAILURE;
        }
    };
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let asked = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(
            format!("GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes(),
        )?;
        // The status line and the start of the body are enough; never more than 4 KiB.
        let mut answer = Vec::new();
        stream.take(4096).read_to_end(&mut answer)?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    })();
    match asked {
        Ok(answer) if answer.starts_with("HTTP/1.1 200 ") => ExitCode::SUCCESS,
        Ok(answer) => {
            let status = answer.lines().next().unwrap_or("no answer");
            let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            eprintln!("health check: http://{address}/health/ready answered `{status}` {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("health check: http://{address}/health/ready: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the service's binary was asked to do by its arguments.
pub enum Invocation {
    /// No arguments: run the service.
    Serve,
    /// `--health-check`.
    HealthCheck,
}

impl Invocation {
    /// Reads the arguments; anything else is a usage error (exit 2) naming what the binary takes.
    pub fn from_args(service: &str) -> Result<Self, std::process::ExitCode> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            [] => Ok(Self::Serve),
            ["--health-check"] => Ok(Self::HealthCheck),
            _ => {
                eprintln!(
                    "{service}: unexpected arguments {args:?}\n\
                     usage: {service}                  run the service (configured by environment variables)\n\
                     \x20      {service} --health-check   exit 0 when the service on PORT answers /health/ready with 200"
                );
                Err(std::process::ExitCode::from(2))
            }
        }
    }
}
