//! The read side of `/api/EntityItems`, over any table with the columns
//! `id uuid, name text, value numeric, created_at timestamptz`.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use service_defaults::{db::is_transient, http::Problem};
use sqlx::PgPool;
use uuid::Uuid;

use crate::Item;

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

/// Everything a handler can fail with, each mapped to a status and a problem body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", .0.title)]
    Invalid(Problem),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// `COMMIT` failed in a way that does not say whether it took effect
    /// (the connection broke, the server was stopped while it answered).
    #[error("commit outcome unknown: {0}")]
    CommitUnknown(sqlx::Error),
}

impl ApiError {
    /// The error of a failed `COMMIT`: unknown unless the database said it rolled back.
    pub fn from_commit(err: sqlx::Error) -> Self {
        let rolled_back = err.as_database_error().and_then(|db| db.code()).is_some_and(|code| {
            // serialization failure, deadlock, a deferred constraint, a transaction already failed
            code == "40001" || code == "40P01" || code.starts_with("23") || code == "25P02"
        });
        if rolled_back { Self::Database(err) } else { Self::CommitUnknown(err) }
    }

    /// The error of a statement that commits by itself: an `ERROR` from the
    /// server means it rolled back (an error at its commit is one too); a
    /// session ended by the server (`FATAL`, `PANIC`: terminated while waiting
    /// for a synchronous standby after the local commit, say) or a connection
    /// lost on the way says nothing about the commit.
    pub fn from_autocommit(err: sqlx::Error) -> Self {
        let rolled_back = service_defaults::db::ends_only_the_statement(&err);
        if rolled_back { Self::Database(err) } else { Self::CommitUnknown(err) }
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self::Invalid(p)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Invalid(problem) => problem.into_response(),
            Self::Database(err) if is_transient(&err) => {
                tracing::warn!(error = %err, "database unavailable; answering 503");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable")
                    .detail("nothing was written; retry shortly")
                    .into_response()
            }
            Self::CommitUnknown(err) => {
                tracing::error!(error = %err, "the commit's outcome is unknown; answering 503");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the outcome is unknown")
                    .detail(
                        "the database connection failed while committing, so the item may or may not have been \
                         stored; send the request again with the same Idempotency-Key to get the first answer \
                         (without one, a retry may store it twice)",
                    )
                    .into_response()
            }
            Self::Database(err) => {
                tracing::error!(error = ?err, "database error");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                    .detail("nothing was written")
                    .into_response()
            }
        }
    }
}

/// A page of items in the order they became visible; pass `next` as `after`
/// for the next page. Reading on from the last item seen later returns what
/// committed since, whatever its id.
#[derive(Debug, Serialize)]
pub struct Page {
    pub items: Vec<Item>,
    pub next: Option<Uuid>,
}

/// `GET /api/EntityItems?limit=&after=`
pub async fn list(
    State(pool): State<PgPool>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "malformed query string").detail(e.body_text()))?;
    let mut problem = Problem::new(StatusCode::BAD_REQUEST, "one or more query parameters are invalid");
    let mut limit = DEFAULT_PAGE;
    let mut after = None;
    for (key, raw) in &query {
        match key.as_str() {
            "limit" => match raw.parse::<i64>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                _ => problem = problem.field("limit", format!("must be a whole number from 1 to {MAX_PAGE}")),
            },
            "after" => match Uuid::parse_str(raw) {
                Ok(id) => after = Some(id),
                Err(_) => problem = problem.field("after", "must be an item id (a UUID) from a previous page's `next`"),
            },
            other => problem = problem.field(other, "is not a known parameter (expected `limit` and `after`)"),
        }
    }
    if !problem.errors.is_empty() {
        return Err(problem.into());
    }
    // In the order rows became visible (see the `paging_order` migration): only rows
    // whose transaction is older than any still running, so none can appear behind
    // the cursor later; a row committed meanwhile shows once those end.
    if let Some(after) = after {
        let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM entity_items WHERE id = $1)")
            .bind(after)
            .fetch_one(&pool)
            .await?;
        if !known {
            return Err(Problem::new(StatusCode::NOT_FOUND, "no such item")
                .detail(format!(
                    "no item has id `{after}`: pass as `after` the `next` of a previous page or an item's id"
                ))
                .into());
        }
    }
    let mut items: Vec<Item> = sqlx::query_as(
        "SELECT id, name, value, created_at FROM entity_items
          WHERE txid < pg_snapshot_xmin(pg_current_snapshot())
            AND ($1::uuid IS NULL OR (txid, id) > (SELECT txid, id FROM entity_items WHERE id = $1))
          ORDER BY txid, id LIMIT $2",
    )
    .bind(after)
    .bind(limit + 1)
    .fetch_all(&pool)
    .await?;
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|i| i.id)
    } else {
        None
    };
    let mut response = Json(Page { items, next }).into_response();
    if let Some(next) = next {
        let link = format!("</api/EntityItems?after={next}&limit={limit}>; rel=\"next\"");
        response.headers_mut().insert(header::LINK, HeaderValue::from_str(&link).expect("ascii"));
    }
    Ok(response)
}

/// `GET /api/EntityItems/{id}`
pub async fn get(State(pool): State<PgPool>, Path(id): Path<String>) -> Result<Json<Item>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| Problem::invalid("id", "must be a UUID"))?;
    let item: Option<Item> = sqlx::query_as("SELECT id, name, value, created_at FROM entity_items WHERE id = $1")
        .bind(id)
        .fetch_optional(&pool)
        .await?;
    item.map(Json).ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, "no such item").detail(format!("no item has id `{id}`")).into()
    })
}

/// `GET /api/EntityItems` and `GET /api/EntityItems/{id}` over `pool`'s `entity_items`.
pub fn read_routes(pool: PgPool) -> axum::Router {
    axum::Router::new()
        .route("/api/EntityItems", axum::routing::get(list))
        .route("/api/EntityItems/{id}", axum::routing::get(get))
        .with_state(pool)
}
