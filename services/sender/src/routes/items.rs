//! `POST /api/EntityItems`: the entity row and its outbox row in one transaction.

use axum::{
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use entity_items::{EVENT_CREATED, Item, NewItem, api::ApiError};
use service_defaults::{http::Problem, telemetry};
use tracing::Instrument;
use uuid::Uuid;

use super::AppState;
use crate::idempotency::{self, Earlier};

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
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[\\x20-\\x7E]+$", description = "1 to 255 visible ASCII characters, bare or quoted. A request sent again with the same key and body gets the first answer (201, `Idempotent-Replayed: true`) instead of a second item; kept 24 h (`IDEMPOTENCY_RETENTION`)"),
    ),
    responses(
        (status = 201, description = "stored; the event will reach the broker (or the first answer to this Idempotency-Key, replayed)", body = crate::openapi::ItemSchema),
        (status = 400, description = "invalid input, fields (or the Idempotency-Key header) named in `errors`", body = crate::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 413, description = "body over 64 KiB", body = crate::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 415, description = "not `application/json`", body = crate::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 422, description = "the Idempotency-Key already answered a request with another body", body = crate::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable or the service at capacity: nothing written; or the commit's outcome is unknown (the title says which): retry with the same Idempotency-Key", body = crate::openapi::ProblemSchema, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = idempotency::key(&headers)?;
    require_json(&headers)?;
    let body = body.map_err(body_problem)?;
    let new = NewItem::parse(&body)?;
    let hash = key.as_ref().map(|_| idempotency::fingerprint(&body));

    let id = Uuid::now_v7();
    // The transaction as a span of its own: the outbox row carries its context,
    // so the relay's publish continues the trace from here.
    // A request turned away at the door (telemetry::Door) has no span: nor has its transaction.
    let insert = match tracing::Span::current().is_none() {
        true => tracing::Span::none(),
        false => tracing::info_span!(
            "outbox insert",
            otel.kind = "internal",
            db.system.name = "postgresql",
            entity.id = %id
        ),
    };
    let wakeup = state.wakeup.clone();
    // The span ends at the commit, before the relay is woken: a trace shows the wait in between.
    let (response, stored) = async move {
        if key.is_none() {
            let traceparent = telemetry::traceparent(&tracing::Span::current());
            let item = state.writes.insert(id, new, traceparent).await?;
            tracing::debug!(id = %item.id, "item stored with its outbox row");
            let payload = serde_json::to_string(&item).expect("an item always serialises");
            return Ok::<_, ApiError>((created(item.id, payload, false), true));
        }
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
        if let (Some(key), Some(hash)) = (&key, &hash)
            && !idempotency::record(&mut tx, key, hash, item.id, &payload, state.retention).await?
        {
            // The key answered before (or just now, in a request this one waited for).
            tx.rollback().await?;
            return match idempotency::earlier(&state.pool, key, hash).await? {
                Some(Earlier::Replay { item, response }) => Ok((created(item, response, true), false)),
                Some(Earlier::Mismatch(problem)) => Err(problem.into()),
                None => Err(Problem::new(StatusCode::CONFLICT, "the Idempotency-Key expired meanwhile")
                    .detail("send the request again")
                    .into()),
            };
        }
        tx.commit().await.map_err(ApiError::from_commit)?;
        tracing::debug!(id = %item.id, "item stored with its outbox row");
        Ok::<_, ApiError>((created(item.id, payload, false), true))
    }
    .instrument(insert)
    .await?;
    if stored {
        wakeup.notify();
    }
    Ok(response)
}

/// 201 with the item's location and its JSON (`replayed`: the first answer to a key, again).
fn created(id: Uuid, json: String, replayed: bool) -> Response {
    let location = HeaderValue::from_str(&format!("/api/EntityItems/{id}")).expect("ascii");
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location), (header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json,
    )
        .into_response();
    if replayed {
        response.headers_mut().insert(idempotency::REPLAYED, HeaderValue::from_static("true"));
    }
    response
}
