//! HTTP pieces every service serves the same way: RFC 9457 problem details,
//! `/health/live`, `/health/ready`, `/metrics`, request metrics, and a server
//! that binds with a clear error and stops gracefully.

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    BoxError, Json, Router,
    error_handling::HandleErrorLayer,
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer};
use tower_http::trace::TraceLayer;

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
///
/// Refusals are logged at most once a second, with their count: an overload
/// of thousands of requests a second writes a line a second, not one a
/// request (`http_requests_total` counts each, by status).
pub fn shed_beyond<S: Clone + Send + Sync + 'static>(router: Router<S>, limit: usize) -> Router<S> {
    let refusals = Arc::new(Refusals::default());
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |_: BoxError| {
                refusals.note(limit);
                async move {
                    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the service is at capacity")
                        .detail(format!("{limit} requests are in progress; nothing was done, retry after 1 s"))
                }
            }))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(limit)),
    )
}

/// Refusals at capacity not yet logged, and when the last line was (tokio's
/// clock: the real one, except in a test that pauses it).
#[derive(Default)]
struct Refusals {
    unlogged: AtomicU64,
    logged: Mutex<Option<tokio::time::Instant>>,
}

impl Refusals {
    /// Counts one; logs the count when no line was written in the last second.
    fn note(&self, limit: usize) {
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        // Another refusal is logging right now: this one is in its count or the next.
        let Ok(mut logged) = self.logged.try_lock() else { return };
        let now = tokio::time::Instant::now();
        if logged.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        *logged = Some(now);
        let refused = self.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(
            refused,
            limit,
            "at capacity: refused {refused} request(s) with 503 since the last such line ({limit} in progress; at most a line a second)"
        );
    }
}

/// The layers every service's router ends with: each request's span
/// ([`request_span`]) and its metrics ([`track_requests`]). A failed answer
/// is not logged again here (tower-http logs every 5xx at ERROR by default):
/// each path that answers 5xx logs its own cause, and refusals at capacity
/// are logged by [`shed_beyond`], a line a second, not one a request.
pub fn observed<S: Clone + Send + Sync + 'static>(router: Router<S>, metrics: &Metrics) -> Router<S> {
    router
        .layer(middleware::from_fn_with_state(HttpMetrics::register(metrics), track_requests))
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_failure(()))
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
    span_past(request, crate::telemetry::door())
}

/// A request's span, if it passes `door` (none: every request gets one).
fn span_past(request: &Request, door: Option<&crate::telemetry::Door>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path().to_owned(), |p| p.as_str().to_owned());
    if route.starts_with("/health") || route == "/metrics" {
        return tracing::Span::none();
    }
    let traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok());
    // A trace not sampled gets no span: under load most requests, each of which
    // would cost the exporting layer as much as a sampled one.
    if door.is_some_and(|door| !door.admits(traceparent)) {
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

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use axum::{Router, body::Body, http::Request, routing::get};
    use tokio::sync::Notify;
    use tower::ServiceExt;

    use super::{observed, shed_beyond};
    use crate::metrics::Metrics;

    /// What the services' log lines would be: the fmt layer into a buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8_lossy(&self.0.lock().unwrap()).lines().map(str::to_owned).collect()
        }
    }

    #[test]
    fn a_request_the_door_turns_away_gets_no_span_and_one_it_admits_gets_its_own() {
        let door = crate::telemetry::Door::with_rate(1.0);
        let post = |traceparent: Option<&str>| {
            let request = Request::post("/api/EntityItems");
            let request = match traceparent {
                Some(t) => request.header("traceparent", t),
                None => request,
            };
            request.body(Body::empty()).unwrap()
        };
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            assert!(!super::span_past(&post(None), None).is_none(), "no door: every request has its span");
            let began = std::time::Instant::now();
            let admitted = (0..10).filter(|_| !super::span_past(&post(None), Some(&door)).is_none()).count();
            // The door's burst, then no spans (but a token a second that passed meanwhile).
            assert!((2..=2 + began.elapsed().as_secs() as usize).contains(&admitted), "{admitted} spans for 10");
            let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            assert!(!super::span_past(&post(Some(sampled)), Some(&door)).is_none(), "a sampled caller's trace");
            let not = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
            assert!(super::span_past(&post(Some(not)), Some(&door)).is_none(), "a caller's trace not sampled");
        });
    }

    /// One request held inside the handler fills a limit of 1; `n` more are
    /// refused; the log says so once a second, with the count, and never a line per refusal.
    // Paused time: the second passes only at the sleep below, however slow the machine.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn refusals_at_capacity_are_logged_a_line_a_second_with_their_count() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // This thread only; the current-thread runtime runs every task here.
        let _guard = tracing::subscriber::set_default(subscriber);

        let release = Arc::new(Notify::new());
        let held = release.clone();
        let api = Router::new().route(
            "/api",
            get(move || {
                let held = held.clone();
                async move {
                    held.notified().await;
                    "done"
                }
            }),
        );
        let router = observed(Router::new().merge(shed_beyond(api, 1)), &Metrics::new());
        let request = || Request::get("/api").body(Body::empty()).unwrap();

        let first = tokio::spawn(router.clone().oneshot(request()));
        tokio::task::yield_now().await;
        let mut statuses = Vec::new();
        for _ in 0..50 {
            statuses.push(router.clone().oneshot(request()).await.unwrap().status().as_u16());
        }
        assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let last = router.clone().oneshot(request()).await.unwrap().status().as_u16();
        assert_eq!(last, 503);
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().status(), 200);

        let lines = captured.lines();
        let refusals: Vec<&String> = lines.iter().filter(|l| l.contains("at capacity")).collect();
        assert_eq!(refusals.len(), 2, "a line for the first refusal, one a second later: {lines:#?}");
        assert!(refusals[0].contains("WARN") && refusals[0].contains("refused 1 request(s)"), "{refusals:#?}");
        assert!(refusals[1].contains("refused 50 request(s)"), "the 49 in between and the last: {refusals:#?}");
        let errors: Vec<&String> = lines.iter().filter(|l| l.contains("ERROR")).collect();
        assert!(errors.is_empty(), "no line per refused request: {errors:#?}");
    }
}
