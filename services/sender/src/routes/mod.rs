//! The HTTP surface: `/api/EntityItems`, health, metrics, OpenAPI and Swagger UI.

pub mod items;

use std::sync::Arc;

use axum::{Router, extract::DefaultBodyLimit, routing::post};
use outbox::{OutboxMetrics, Wakeup};
use service_defaults::{
    http::{self, ReadinessCheck},
    metrics::Metrics,
};
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

/// Request bodies above this are refused with 413 before they are read whole.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// The `POST`s without an `Idempotency-Key`, written together (see [`crate::writes`]).
    pub writes: crate::writes::Writes,
    pub wakeup: Wakeup,
    /// How long an `Idempotency-Key` is kept.
    pub retention: std::time::Duration,
}

/// The API, health, metrics and documents. At most `max_in_flight` API
/// requests are served at once; health and metrics are never refused.
pub fn router(state: AppState, metrics: &Metrics, ready: ReadinessCheck, max_in_flight: usize) -> Router {
    let write = Router::new()
        .route("/api/EntityItems", post(items::create))
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let api = write.merge(entity_items::api::read_routes(state.pool));
    let router = Router::new()
        .merge(http::shed_beyond(api, max_in_flight))
        .merge(http::health_routes(metrics.clone(), ready))
        .merge(SwaggerUi::new("/swagger").url("/openapi.json", crate::openapi::ApiDoc::openapi()))
        .fallback(http::not_found);
    http::observed(router, metrics)
}

/// `/health/ready`: ready while the database answers (on `pool`, a connection
/// of its own: requests that hold every request connection make the sender
/// busy, not unready). A broker outage does not make the sender unready; the
/// body shows it with the outbox backlog.
pub fn readiness(pool: PgPool, outbox: OutboxMetrics) -> ReadinessCheck {
    Arc::new(move || {
        let pool = pool.clone();
        let outbox = outbox.clone();
        Box::pin(async move {
            let db =
                tokio::time::timeout(std::time::Duration::from_secs(2), sqlx::query("SELECT 1").execute(&pool)).await;
            let (ready, database) = match db {
                Ok(Ok(_)) => (true, "up".to_owned()),
                Ok(Err(e)) => (false, format!("down: {e}")),
                Err(_) => (false, "down: no answer within 2s".to_owned()),
            };
            let connected = outbox.broker_connected.get() > 0;
            http::Readiness {
                ready,
                details: serde_json::json!({
                    "database": database,
                    "broker": if connected { "connected" } else { "disconnected" },
                    "outbox": {
                        "pending": outbox.pending.get(),
                        "oldestPendingSeconds": outbox.oldest_pending_seconds.get(),
                    },
                }),
            }
        })
    })
}
