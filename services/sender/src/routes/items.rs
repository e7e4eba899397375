//! `POST /api/EntityItems`: the entity row and its outbox row in one transaction.

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use entity_items::{EVENT_CREATED, Item, NewItem, api::ApiError};
use service_defaults::{http::Problem, telemetry};
use uuid::Uuid;

use super::AppState;

fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = content_type.map(|ct| ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        Some(ct) if ct.starts_with("application/") && ct.ends_with("+json") => Ok(()),
        other => Err(Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported content type").detail(format!(
            "send the item as `application/json`, not {}",
            other.map_or("no content type".to_owned(), |ct| format!("`{ct}`"))
        ))),
    }
}

fn body_problem(rejection: BytesRejection) -> Problem {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(status, "request body too large")
            .detail(format!("the body must be at most {} bytes", super::MAX_BODY_BYTES))
    } else {
        Problem::new(status, "cannot read the request body").detail(rejection.body_text())
    }
}

/// `POST /api/EntityItems`
#[utoipa::path(post, path = "/api/EntityItems", request_body = crate::openapi::CreateItem,
    responses(
        (status = 201, description = "stored; the event will reach the broker", body = crate::openapi::ItemSchema),
        (status = 400, description = "invalid input, fields named in `errors`", body = crate::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 413, description = "body over 64 KiB", body = crate::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 415, description = "not `application/json`", body = crate::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable; nothing written", body = crate::openapi::ProblemSchema, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = body.map_err(body_problem)?;
    let new = NewItem::parse(&body)?;

    let id = Uuid::now_v7();
    let mut tx = state.pool.begin().await?;
    let item: Item = sqlx::query_as(
        "INSERT INTO entity_items (id, name, value) VALUES ($1, $2, $3)
         RETURNING id, name, value, created_at",
    )
    .bind(id)
    .bind(new.name.as_str())
    .bind(new.value)
    .fetch_one(&mut *tx)
    .await?;
    let payload = serde_json::to_string(&item).expect("an item always serialises");
    outbox::enqueue(
        &mut tx,
        outbox::NewMessage {
            event_type: EVENT_CREATED,
            payload: &payload,
            traceparent: telemetry::traceparent(&tracing::Span::current()),
        },
    )
    .await?;
    tx.commit().await?;
    state.wakeup.notify();

    let location = HeaderValue::from_str(&format!("/api/EntityItems/{}", item.id)).expect("ascii");
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(item)).into_response())
}
