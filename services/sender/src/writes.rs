//! The `POST`s without an `Idempotency-Key`, written together: each request
//! queues its item, and a writer takes every item queued (up to
//! `max_batch`) into one statement, so one commit and one WAL flush serve
//! them all. Under light load a batch is one item and costs what the
//! request's own statement did; under heavy load the database's cost per
//! item falls instead of the requests queueing for connections. Each item
//! still has exactly one answer: 201 once its statement committed, or the
//! error its own statement alone would have had (a batch refused as a
//! whole is written again item by item, so one bad item fails alone).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use entity_items::{EVENT_CREATED, Item, NewItem, api::ApiError};
use service_defaults::db::Connections;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

/// `$1..$3` the items, `$4`, `$6` their outbox rows' ids and traceparents,
/// `$5` the event type, all arrays of the batch's length but `$5`. The
/// payload's fields are [`Item`]'s: `value` with no trailing zeros
/// (`trim_scale`, as `decimal_as_number`), `createdAt` in UTC to the
/// microsecond (as `rfc3339_micros`); its colons are quoted so that no
/// `:name` in it reads as a variable to `pgbench`, which runs this statement
/// (one item) as the bench's reference. One statement, so one round trip
/// and one implicit transaction, instead of four (`BEGIN`, two inserts,
/// `COMMIT`). The event is built by the database from the row it returns,
/// exactly as `serde_json` writes the [`Item`] and [`outbox::enqueue`]
/// stores it (jsonb): the test `the_one_statement_event_is_the_one_enqueue_stores`
/// holds them equal.
pub const INSERT_WITH_EVENTS: &str = r#"WITH new AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::numeric[], $4::uuid[], $6::text[])
        AS n (id, name, value, event_id, traceparent)
), item AS (
    INSERT INTO entity_items (id, name, value) SELECT id, name, value FROM new
    RETURNING id, name, value, created_at
), event AS (
    INSERT INTO outbox (id, event_type, payload, traceparent)
    SELECT new.event_id, $5, jsonb_build_object(
               'id', item.id, 'name', item.name, 'value', trim_scale(item.value),
               'createdAt', to_char(item.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24":"MI":"SS.US"Z"')),
           new.traceparent
      FROM item JOIN new ON new.id = item.id
)
SELECT id, name, value, created_at FROM item"#;

/// The queue the requests put their items in; cloned into each request.
#[derive(Clone)]
pub struct Writes {
    queue: mpsc::Sender<Pending>,
    /// How long an item may wait for a writer and its connection before its
    /// request is answered "unavailable, nothing written".
    wait: Duration,
}

struct Pending {
    id: Uuid,
    new: NewItem,
    traceparent: Option<String>,
    /// Set by whichever comes first: a writer taking the item, or its
    /// request giving up waiting. Only one of them acts on the item.
    taken: Arc<AtomicBool>,
    answer: oneshot::Sender<Result<Item, ApiError>>,
}

impl Writes {
    /// `writers` tasks writing on `connections`, each at most `max_batch`
    /// items a statement; they end when the last [`Writes`] is dropped. The
    /// queue holds a batch for each writer; a request that finds it full
    /// for `wait` is answered "unavailable, nothing written".
    pub fn start(connections: Connections, writers: usize, max_batch: usize, wait: Duration) -> Self {
        let (writers, max_batch) = (writers.max(1), max_batch.max(1));
        let (queue, taken) = mpsc::channel(writers * max_batch);
        let taken = Arc::new(Mutex::new(taken));
        for _ in 0..writers {
            tokio::spawn(writer(connections.clone(), taken.clone(), max_batch));
        }
        Self { queue, wait }
    }

    /// Stores `new` as item `id` with its outbox row (`traceparent` in it);
    /// the error is the one its own statement would have had.
    pub async fn insert(&self, id: Uuid, new: NewItem, traceparent: Option<String>) -> Result<Item, ApiError> {
        let taken = Arc::new(AtomicBool::new(false));
        let (answer, answered) = oneshot::channel();
        let pending = Pending { id, new, traceparent, taken: taken.clone(), answer };
        let queued = tokio::time::timeout(self.wait, self.queue.send(pending)).await;
        if !matches!(queued, Ok(Ok(()))) {
            // Not queued (full for the whole wait, or closed): nothing written.
            return Err(ApiError::Database(sqlx::Error::PoolTimedOut));
        }
        let mut answered = answered;
        if let Ok(answer) = tokio::time::timeout(self.wait, &mut answered).await {
            return answer.unwrap_or_else(|_| Err(writer_gone()));
        }
        if !taken.swap(true, Ordering::AcqRel) {
            // No writer took it in time, and none will now: nothing written.
            return Err(ApiError::Database(sqlx::Error::PoolTimedOut));
        }
        // A writer has it: its answer, however long the statement takes.
        answered.await.unwrap_or_else(|_| Err(writer_gone()))
    }
}

/// A writer that ended with an item taken: the statement may have run.
fn writer_gone() -> ApiError {
    ApiError::CommitUnknown(sqlx::Error::WorkerCrashed)
}

/// Takes every item queued, up to `max_batch`, once at least one is.
async fn writer(connections: Connections, queue: Arc<Mutex<mpsc::Receiver<Pending>>>, max_batch: usize) {
    loop {
        let mut batch = Vec::with_capacity(max_batch);
        {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else { return };
            batch.push(first);
            while batch.len() < max_batch
                && let Ok(next) = queue.try_recv()
            {
                batch.push(next);
            }
        }
        // Those whose requests gave up (or went away) are answered already, or by
        // no one: not written. The rest are this writer's.
        batch.retain(|p| !p.answer.is_closed() && !p.taken.swap(true, Ordering::AcqRel));
        if !batch.is_empty() {
            write(&connections, batch).await;
        }
    }
}

/// Writes `batch` in one statement and answers each item.
async fn write(connections: &Connections, batch: Vec<Pending>) {
    // Failing to get a connection wrote nothing.
    let mut conn = match connections.get().await {
        Ok(conn) => conn,
        Err(err) => return answer_all(batch, err, || sqlx::Error::PoolTimedOut, ApiError::Database),
    };
    let stored = statement(&mut conn, &batch).await;
    let refused_whole = stored.as_ref().is_err_and(service_defaults::db::ends_only_the_statement);
    conn.give_back(&stored);
    match stored {
        Ok(items) => {
            let mut items: std::collections::HashMap<Uuid, Item> = items.into_iter().map(|i| (i.id, i)).collect();
            for p in batch {
                let answer = items.remove(&p.id).ok_or_else(|| {
                    // Cannot be: the statement returns every row it inserted.
                    ApiError::CommitUnknown(sqlx::Error::RowNotFound)
                });
                let _ = p.answer.send(answer);
            }
        }
        // Nothing was written: each alone, so each gets the error of its own statement.
        Err(_) if refused_whole && batch.len() > 1 => {
            for p in batch {
                Box::pin(write(connections, vec![p])).await;
            }
        }
        Err(err) => {
            // The statement's commit may or may not have happened, for all of them.
            let text = err.to_string();
            let copy = || sqlx::Error::Io(std::io::Error::other(text.clone()));
            answer_all(batch, err, copy, ApiError::from_autocommit);
        }
    }
}

/// Answers every item of `batch` with `err` as `wrap` makes it an answer: the
/// first item gets the error itself, the others what `copy` makes of it.
fn answer_all(
    batch: Vec<Pending>,
    err: sqlx::Error,
    copy: impl Fn() -> sqlx::Error,
    wrap: impl Fn(sqlx::Error) -> ApiError,
) {
    let mut err = Some(err);
    for p in batch {
        let err = err.take().unwrap_or_else(&copy);
        let _ = p.answer.send(Err(wrap(err)));
    }
}

async fn statement(conn: &mut sqlx::PgConnection, batch: &[Pending]) -> Result<Vec<Item>, sqlx::Error> {
    let ids: Vec<Uuid> = batch.iter().map(|p| p.id).collect();
    let names: Vec<&str> = batch.iter().map(|p| p.new.name.as_str()).collect();
    let values: Vec<_> = batch.iter().map(|p| p.new.value).collect();
    let event_ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
    let traceparents: Vec<Option<&str>> = batch.iter().map(|p| p.traceparent.as_deref()).collect();
    sqlx::query_as(INSERT_WITH_EVENTS)
        .bind(ids)
        .bind(names)
        .bind(values)
        .bind(event_ids)
        .bind(EVENT_CREATED)
        .bind(traceparents)
        .fetch_all(conn)
        .await
}
