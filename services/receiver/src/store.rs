//! The receiver's database: an inbox row per message id and the projected
//! item, committed together. A message id already in the inbox has no effect.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use service_defaults::telemetry::trace_id_of;
use sqlx::PgPool;
use std::collections::HashSet;
use uuid::Uuid;

use crate::decode::Event;

/// Which events of a batch were new (the rest were duplicates).
#[derive(Debug, Default)]
pub struct Stored {
    pub new: HashSet<String>,
}

/// A batch's inbox rows (message ids, subjects, trace ids); returns the ids that were new.
pub const INSERT_INBOX: &str = "INSERT INTO inbox (message_id, subject, trace_id)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
         ON CONFLICT (message_id) DO NOTHING
         RETURNING message_id";

/// A round of new messages' items (ids, names, values, creation times, message ids).
pub const INSERT_ITEMS: &str = "INSERT INTO entity_items (id, name, value, created_at, message_id)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::numeric[], $4::timestamptz[], $5::text[])
             ON CONFLICT (id) DO UPDATE SET applied = entity_items.applied + 1";

/// Stores a batch in one transaction: inbox rows first (conflicts skipped),
/// then the items of the messages that were new. Each application of an item
/// counts (`applied`): an item applied again shows as `applied > 1`.
pub async fn store(pool: &PgPool, events: &[&Event]) -> Result<Stored, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ids: Vec<&str> = events.iter().map(|e| e.message_id.as_str()).collect();
    let subjects: Vec<&str> = events.iter().map(|e| e.subject.as_str()).collect();
    let trace_ids: Vec<Option<&str>> = events.iter().map(|e| e.traceparent.as_deref().and_then(trace_id_of)).collect();
    let new: Vec<String> =
        sqlx::query_scalar(INSERT_INBOX).bind(&ids).bind(&subjects).bind(&trace_ids).fetch_all(&mut *tx).await?;
    let new: HashSet<String> = new.into_iter().collect();

    // The first copy of each new message id; a second copy in the same batch is a duplicate.
    let mut taken = HashSet::new();
    let fresh: Vec<&Event> = if cfg!(feature = "no-dedup") {
        // Broken on purpose (tests only): every delivery is applied.
        events.to_vec()
    } else {
        events.iter().copied().filter(|e| new.contains(&e.message_id) && taken.insert(e.message_id.as_str())).collect()
    };
    // One statement cannot touch a row twice: the copies of one item in a batch
    // go in rounds, each round at most one copy of an item.
    let mut rounds: Vec<Vec<&Event>> = Vec::new();
    for event in fresh {
        match rounds.iter_mut().find(|round| round.iter().all(|e| e.item.id != event.item.id)) {
            Some(round) => round.push(event),
            None => rounds.push(vec![event]),
        }
    }
    for round in rounds {
        let item_ids: Vec<Uuid> = round.iter().map(|e| e.item.id).collect();
        let names: Vec<&str> = round.iter().map(|e| e.item.name.as_str()).collect();
        let values: Vec<Decimal> = round.iter().map(|e| e.item.value).collect();
        let created: Vec<DateTime<Utc>> = round.iter().map(|e| e.item.created_at).collect();
        let message_ids: Vec<&str> = round.iter().map(|e| e.message_id.as_str()).collect();
        // The same item applied again (a replayed event under a new message id)
        // keeps its first copy and counts the application.
        sqlx::query(INSERT_ITEMS)
            .bind(&item_ids)
            .bind(&names)
            .bind(&values)
            .bind(&created)
            .bind(&message_ids)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Stored { new })
}
