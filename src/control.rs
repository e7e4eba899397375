//! The control API of a running `apphost up`: HTTP on loopback, a random
//! bearer token, both written to `.apphost/session.json` (owner-only). The
//! CLI's `ps`, `logs`, `stop`, `start`, `restart` and `down` talk to it.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Query, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::StreamExt;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use contracts::{Action, action::Outcome};

use crate::supervisor::Supervisor;

#[derive(Clone)]
struct Api {
    supervisor: Arc<Supervisor>,
    /// What the dashboard reads, for dashboards in other processes.
    view: Arc<dyn dashboard::Stack>,
    token: Arc<str>,
    /// Cancelled to take the whole app down.
    down: CancellationToken,
}

/// Binds a loopback port; returns it and the server's future.
pub async fn serve(
    supervisor: Arc<Supervisor>,
    view: Arc<dyn dashboard::Stack>,
    token: String,
    down: CancellationToken,
    stop: CancellationToken,
) -> std::io::Result<(u16, impl Future<Output = ()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let api = Api { supervisor, view, token: token.into(), down };
    let router = Router::new()
        .route("/v1/ps", get(ps))
        .route("/v1/events", get(events))
        .route("/v1/logs", get(logs))
        .route("/v1/view", get(snapshot))
        .route("/v1/traces", get(traces))
        .route("/v1/traces/{id}", get(trace))
        .route("/v1/records", get(records))
        .route("/v1/telemetry", get(telemetry))
        .route("/v1/resources/{name}/{action}", post(act))
        .route("/v1/down", post(take_down))
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api);
    let server = async move {
        let _ = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
    };
    Ok((port, server))
}

async fn authorize(State(api): State<Api>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time enough for a loopback token: compare every byte.
    let ok = presented.is_some_and(|p| {
        p.len() == api.token.len() && p.bytes().zip(api.token.bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if ok {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(Outcome::Error("missing or wrong token; the CLI reads it from .apphost/session.json".into())),
        )
            .into_response()
    }
}

async fn ps(State(api): State<Api>) -> impl IntoResponse {
    Json(api.supervisor.snapshot())
}

async fn events(State(api): State<Api>) -> impl IntoResponse {
    Json(api.supervisor.history())
}

#[derive(Deserialize)]
struct ViewQuery {
    /// Whose lines; everyone's when absent.
    source: Option<String>,
    #[serde(default = "default_view_lines")]
    limit: usize,
    /// The version the caller has: unchanged answers 204 with no body.
    since: Option<u64>,
}

fn default_view_lines() -> usize {
    dashboard::app::SCROLLBACK
}

/// Everything the dashboard shows, at once (`apphost dashboard` polls it).
async fn snapshot(State(api): State<Api>, Query(q): Query<ViewQuery>) -> Response {
    if q.since.is_some_and(|v| v == api.view.version()) {
        return StatusCode::NO_CONTENT.into_response();
    }
    let snapshot = dashboard::view::Snapshot::of(
        api.view.as_ref(),
        q.source.as_deref(),
        q.limit.min(50_000),
        dashboard::app::EVENTS_KEPT,
    );
    Json(snapshot).into_response()
}

#[derive(Deserialize)]
struct TracesQuery {
    resource: Option<String>,
    #[serde(default)]
    min_duration_nanos: u64,
    #[serde(default)]
    errors: bool,
    text: Option<String>,
    #[serde(default = "default_tail")]
    limit: usize,
}

/// `GET /v1/traces?resource=&min_duration_nanos=&errors=&text=&limit=`: newest first.
async fn traces(State(api): State<Api>, Query(q): Query<TracesQuery>) -> Response {
    let filter = dashboard::telemetry::TraceFilter {
        resource: q.resource,
        min_duration_nanos: q.min_duration_nanos,
        errors: q.errors,
        text: q.text,
    };
    Json(api.view.traces(&filter, q.limit.min(10_000))).into_response()
}

async fn trace(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.view.trace(&id) {
        Some(trace) => Json(trace).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(Outcome::Error(format!(
                "no trace `{id}` here: not received, sampled out or pushed out of the store (`apphost traces` lists \
                 those kept; GET /v1/telemetry counts what was let go)"
            ))),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct RecordsQuery {
    resource: Option<String>,
    level: Option<String>,
    /// `key=value`, comma-separated.
    attr: Option<String>,
    trace_id: Option<String>,
    text: Option<String>,
    #[serde(default = "default_tail")]
    limit: usize,
}

/// `GET /v1/records?resource=&level=&attr=k=v,k2=v2&trace_id=&text=&limit=`: oldest first.
async fn records(State(api): State<Api>, Query(q): Query<RecordsQuery>) -> Response {
    let level = match q.level.as_deref().map(|l| dashboard::telemetry::Level::parse(l).ok_or(l)) {
        Some(Err(l)) => {
            let message = format!("level `{l}`: one of trace, debug, info, warn, error");
            return (StatusCode::BAD_REQUEST, Json(Outcome::Error(message))).into_response();
        }
        Some(Ok(l)) => Some(l),
        None => None,
    };
    let filter = dashboard::telemetry::LogFilter {
        resource: q.resource,
        level,
        attributes: q
            .attr
            .map(|a| a.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default(),
        trace_id: q.trace_id,
        text: q.text,
    };
    Json(api.view.records(&filter, q.limit.min(50_000))).into_response()
}

async fn telemetry(State(api): State<Api>) -> Response {
    match api.view.telemetry() {
        Some(stats) => Json(stats).into_response(),
        None => (StatusCode::NOT_FOUND, Json(Outcome::Error("no OTLP receiver runs in this session".into())))
            .into_response(),
    }
}

#[derive(Deserialize)]
struct LogQuery {
    resource: Option<String>,
    #[serde(default)]
    follow: bool,
    #[serde(default = "default_tail")]
    tail: usize,
}

fn default_tail() -> usize {
    200
}

/// Lines as NDJSON; with `follow`, the stream stays open and goes on.
async fn logs(State(api): State<Api>, Query(q): Query<LogQuery>) -> Response {
    let names = match &q.resource {
        Some(r) => {
            let names = api.supervisor.resolve(r);
            if names.is_empty() {
                return (StatusCode::NOT_FOUND, Json(Outcome::Error(format!("no resource is called `{r}`"))))
                    .into_response();
            }
            Some(names)
        }
        None => None,
    };
    let store = api.supervisor.logs().clone();
    let mut backlog = match &names {
        Some(names) => names.iter().flat_map(|n| store.tail(Some(n), q.tail)).collect::<Vec<_>>(),
        None => store.tail(None, q.tail),
    };
    backlog.sort_by_key(|l| l.seq);
    let last = backlog.last().map(|l| l.seq);
    let head = futures::stream::iter(backlog.into_iter().map(Ok::<_, std::io::Error>));
    let body = if q.follow {
        let live = tokio_stream_from(store.subscribe()).filter(move |l| {
            let keep =
                names.as_ref().is_none_or(|n| n.iter().any(|n| **n == *l.resource)) && last.is_none_or(|s| l.seq > s);
            async move { keep }
        });
        Body::from_stream(head.chain(live.map(Ok)).map(|l| l.map(to_ndjson)))
    } else {
        Body::from_stream(head.map(|l| l.map(to_ndjson)))
    };
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

fn to_ndjson(line: crate::logs::LogLine) -> String {
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

fn tokio_stream_from(
    mut rx: tokio::sync::broadcast::Receiver<crate::logs::LogLine>,
) -> impl futures::Stream<Item = crate::logs::LogLine> {
    async_stream(move |tx| async move {
        loop {
            match rx.recv().await {
                Ok(line) => {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    })
}

/// A stream fed by a task through a small channel.
fn async_stream<T: Send + 'static, F, Fut>(f: F) -> impl futures::Stream<Item = T>
where
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(f(tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

#[derive(Deserialize)]
struct ActQuery {
    /// Undo the action after this long (`30s`): start after stop, resume
    /// after pause, heal after partition.
    #[serde(rename = "for")]
    duration: Option<String>,
    /// Recorded as `chaos: …` in the event timeline.
    #[serde(default)]
    chaos: bool,
}

async fn act(
    State(api): State<Api>,
    Path((name, action)): Path<(String, String)>,
    Query(q): Query<ActQuery>,
) -> Response {
    let refuse = |status, error: String| (status, Json(Outcome::Error(error))).into_response();
    let action = match action.parse::<Action>() {
        Ok(action) => action,
        Err(_) => return refuse(StatusCode::NOT_FOUND, format!("unknown action `{action}`")),
    };
    let undo = action.undo();
    let duration = match q.duration.as_deref().map(crate::topology::parse_duration) {
        None => None,
        Some(Some(d)) if undo.is_some() => Some(d),
        Some(Some(_)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("`{action}` cannot be undone after a while; `--for` applies to stop, pause and partition"),
            );
        }
        Some(None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("`{}` is not a duration such as `30s`", q.duration.unwrap_or_default()),
            );
        }
    };
    let prefix = if q.chaos { "chaos: " } else { "" };
    let lasting = duration.map(|d| format!(" for {d:?}")).unwrap_or_default();
    match api.supervisor.request(&name, action, &format!("{prefix}{action}{lasting}"), prefix).await {
        Ok(message) => {
            if let (Some(d), Some(undo)) = (duration, undo) {
                let supervisor = api.supervisor.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let outcome = supervisor.act(&name, undo).await;
                    let said = outcome.unwrap_or_else(|e| format!("could not undo: {e}"));
                    supervisor.record(&name, format!("{prefix}after {d:?}: {said}"));
                });
            }
            Json(Outcome::Ok(message)).into_response()
        }
        Err(error) => refuse(StatusCode::CONFLICT, error),
    }
}

async fn take_down(State(api): State<Api>) -> impl IntoResponse {
    api.down.cancel();
    Json(Outcome::Ok("tearing down".into()))
}

/// A client of a running session's API.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(session: &crate::statedir::Session) -> Self {
        Self {
            base: format!("http://127.0.0.1:{}", session.port),
            token: session.token.clone(),
            // No bound on a whole request: a followed log stream lasts as long as it is read.
            http: crate::loopback::client(None),
        }
    }

    /// A request that answers at once (bounded at 120 s).
    pub async fn get(&self, path: &str) -> Result<reqwest::Response, String> {
        let request = self.http.get(format!("{}{path}", self.base)).timeout(Duration::from_secs(120));
        request.bearer_auth(&self.token).send().await.map_err(|e| e.to_string())
    }

    /// A stream that stays open as long as the server sends (`logs -f`).
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, String> {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.map_err(|e| e.to_string())
    }

    /// `action` on `resource`, undone after `lasting`; `chaos` records it as chaos.
    pub async fn act(
        &self,
        resource: &str,
        action: Action,
        lasting: Option<Duration>,
        chaos: bool,
    ) -> Result<String, String> {
        let mut path = format!("/v1/resources/{resource}/{action}");
        let mut query = Vec::new();
        if chaos {
            query.push("chaos=true".to_owned());
        }
        if let Some(d) = lasting {
            query.push(format!("for={}ms", d.as_millis()));
        }
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        self.post(&path).await
    }

    /// Asks the session to take the whole app down.
    pub async fn down(&self) -> Result<String, String> {
        self.post("/v1/down").await
    }

    /// Every instance's status.
    pub async fn ps(&self) -> Result<Vec<crate::supervisor::Status>, String> {
        self.get("/v1/ps").await?.json().await.map_err(|e| e.to_string())
    }

    async fn post(&self, path: &str) -> Result<String, String> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(120))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        match response.json::<Outcome>().await {
            Ok(Outcome::Ok(message)) if status.is_success() => Ok(message),
            Ok(Outcome::Ok(message) | Outcome::Error(message)) => Err(message),
            Err(_) => Err(format!("the control API answered {status}")),
        }
    }
}
