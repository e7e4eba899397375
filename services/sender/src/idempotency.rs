//! `Idempotency-Key` on `POST /api/EntityItems`, after the IETF draft
//! (draft-ietf-httpapi-idempotency-key-header): a client that does not know
//! whether its request took effect (a timeout, a connection lost, a 503 whose
//! outcome is unknown) sends it again with the same key and gets the first
//! answer instead of a second item.
//!
//! - The key, a SHA-256 of the body and the answer are written in the item's
//!   own transaction: a key is recorded exactly when its item is.
//! - The same key with the same body gets the first 201 again
//!   (`Idempotent-Replayed: true`); with another body, 422.
//! - Two requests with one key at once: the second waits on the key's row
//!   until the first ends, then replays it; never two items.
//! - Keys are kept for `IDEMPOTENCY_RETENTION` (24 h), then forgotten.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use service_defaults::http::Problem;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
/// Longer keys are refused: a UUID is 36 characters.
pub const MAX_KEY_CHARS: usize = 255;

/// The request's key, if it sent one: visible ASCII, 1 to 255 characters,
/// bare or as a quoted structured-field string (`"…"`, as the draft writes it).
pub fn key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let invalid = |why: &str| Problem::invalid("Idempotency-Key", why);
    if values.next().is_some() {
        return Err(invalid("must be sent once"));
    }
    let raw = value.to_str().map_err(|_| invalid("must be visible ASCII"))?.trim();
    let key = raw.strip_prefix('"').and_then(|k| k.strip_suffix('"')).unwrap_or(raw);
    if key.is_empty() || key.len() > MAX_KEY_CHARS {
        return Err(invalid(&format!("must be 1 to {MAX_KEY_CHARS} characters, got {}", key.len())));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(invalid("must be visible ASCII"));
    }
    Ok(Some(key.to_owned()))
}

pub fn fingerprint(body: &[u8]) -> Vec<u8> {
    Sha256::digest(body).to_vec()
}

/// Records `key` with its answer in the item's transaction. `false` when a
/// live record of the key exists (committed by another request, which this
/// one waited for): the transaction must be rolled back and that answer given.
/// An expired record is replaced.
pub async fn record(
    tx: &mut PgConnection,
    key: &str,
    hash: &[u8],
    item: Uuid,
    response: &str,
    retention: Duration,
) -> Result<bool, sqlx::Error> {
    let written: Option<bool> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (key, request_hash, response, item_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE
            SET request_hash = EXCLUDED.request_hash, response = EXCLUDED.response,
                item_id = EXCLUDED.item_id, created_at = now()
          WHERE idempotency_keys.created_at < now() - make_interval(secs => $5)
         RETURNING true",
    )
    .bind(key)
    .bind(hash)
    .bind(response)
    .bind(item)
    .bind(retention.as_secs_f64())
    .fetch_optional(tx)
    .await?;
    Ok(written.is_some())
}

/// What a repeated key gets: the first answer (same body) or 422 (another body).
pub enum Earlier {
    Replay { item: Uuid, response: String },
    Mismatch(Problem),
}

/// The recorded answer to `key`, compared with this request's `hash`. `None`
/// if the record is gone (it expired meanwhile): the request may be tried again.
pub async fn earlier(pool: &PgPool, key: &str, hash: &[u8]) -> Result<Option<Earlier>, sqlx::Error> {
    let row: Option<(Vec<u8>, Uuid, String)> =
        sqlx::query_as("SELECT request_hash, item_id, response FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(stored, item, response)| {
        if stored == hash {
            Earlier::Replay { item, response }
        } else {
            Earlier::Mismatch(
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "the Idempotency-Key was used for another request")
                    .detail(format!(
                        "the key `{key}` already answered a request with a different body (item {item}); \
                         send a new key with a new request"
                    )),
            )
        }
    }))
}

/// Forgets keys older than `retention`, every `retention / 4` (at most 15 min apart).
pub async fn forget_expired(pool: PgPool, retention: Duration, cancel: CancellationToken) {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(900));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let purged = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)")
            .bind(retention.as_secs_f64())
            .execute(&pool)
            .await;
        match purged {
            Ok(done) if done.rows_affected() > 0 => {
                tracing::debug!(forgotten = done.rows_affected(), "expired idempotency keys forgotten");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "cannot forget expired idempotency keys; will try again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(values: &[&str]) -> Result<Option<String>, Problem> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(HEADER, HeaderValue::from_str(v).unwrap());
        }
        key(&headers)
    }

    #[test]
    fn keys_are_read_bare_or_quoted_and_bounded() {
        assert_eq!(with(&[]).unwrap(), None);
        assert_eq!(with(&["abc-1"]).unwrap().as_deref(), Some("abc-1"));
        assert_eq!(with(&["\"8e03978e-40d5\""]).unwrap().as_deref(), Some("8e03978e-40d5"));
        assert!(with(&["\"\""]).is_err());
        assert!(with(&[&"k".repeat(256)]).is_err());
        assert!(with(&["a", "b"]).is_err());
    }
}
