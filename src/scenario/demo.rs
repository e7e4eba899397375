//! What the scenarios know of the demo stack itself: the sender's and the
//! receiver's API (`/api/EntityItems`), the receiver's inbox table, and a
//! message no receiver can process.

use std::{collections::HashSet, time::Duration};

use serde_json::Value;

/// POSTs an item named `name` to the sender at `sender`; `Ok(Some(id))` when
/// it was acknowledged (201), `Ok(None)` when refused with `status`.
pub(super) async fn post_item(
    client: &reqwest::Client,
    sender: &str,
    name: String,
    value: u64,
) -> Result<Result<String, reqwest::StatusCode>, reqwest::Error> {
    let body = serde_json::json!({ "name": name, "value": value });
    // Each request its own trace, as a client's would be: a lost or doubled item's trace
    // (found in apphost's OTLP store by the item's id) shows where it went.
    let traceparent = format!("00-{:032x}-{:016x}-01", rand::random::<u128>() | 1, rand::random::<u64>() | 1);
    let response =
        client.post(format!("{sender}/api/EntityItems")).header("traceparent", traceparent).json(&body).send().await?;
    let status = response.status();
    if status != reqwest::StatusCode::CREATED {
        return Ok(Err(status));
    }
    let item: Value = response.json().await?;
    Ok(item["id"].as_str().map(str::to_owned).ok_or(status))
}

/// Up to `limit` of the items `ids` the receiver's projection applied more than once.
pub(super) async fn applied_twice(pool: &sqlx::PgPool, ids: &[String], limit: i64) -> Result<Vec<String>, String> {
    sqlx::query_scalar("SELECT id::text FROM entity_items WHERE id::text = ANY($1) AND applied > 1 LIMIT $2")
        .bind(ids)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(|e| format!("could not read the receiver's applications: {e}"))
}

/// Applications beyond the first of the items `ids`, as the receiver's
/// projection counts them (`applied`, raised in the transaction of each application).
pub(super) async fn extra_applications(pool: &sqlx::PgPool, ids: &[String]) -> Result<u64, String> {
    let extra: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(applied - 1), 0)::bigint FROM entity_items WHERE id::text = ANY($1)")
            .bind(ids)
            .fetch_one(pool)
            .await
            .map_err(|e| format!("could not count the receiver's applications: {e}"))?;
    Ok(extra.max(0) as u64)
}

/// The message id under which the receiver stored item `id`, if it has.
pub(super) async fn message_id_of(pool: &sqlx::PgPool, id: &str) -> Result<Option<String>, String> {
    sqlx::query_scalar("SELECT message_id FROM entity_items WHERE id::text = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(|e| format!("could not read the receiver's item {id}: {e}"))
}

/// Sends item `id` (its event as the receiver's API returns it) to `queue`
/// again under its first `message_id`, with a new `_AMQ_DUPL_ID` so that
/// Artemis's duplicate detection lets it through: a redelivery only the
/// receiver's own deduplication can absorb.
pub(super) async fn redeliver(
    client: &reqwest::Client,
    receiver: &str,
    url: &str,
    queue: &str,
    id: &str,
    message_id: &str,
) -> Result<(), String> {
    let event = client
        .get(format!("{receiver}/api/EntityItems/{id}"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("could not read item {id} from the receiver: {e}"))?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    let properties = [("_AMQ_DUPL_ID".to_owned(), uuid::Uuid::new_v4().to_string())];
    send(url, queue, message_id, &properties, event.to_vec()).await
}

/// Ids the receiver has stored, read page by page.
pub(super) async fn stored(client: &reqwest::Client, url: &str) -> Result<HashSet<String>, String> {
    let mut ids = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let mut page = format!("{url}/api/EntityItems?limit=1000");
        if let Some(a) = &after {
            page.push_str(&format!("&after={a}"));
        }
        let body: Value =
            client.get(page).send().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
        for item in body["items"].as_array().into_iter().flatten() {
            if let Some(id) = item["id"].as_str() {
                ids.insert(id.to_owned());
            }
        }
        match body["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Ok(ids),
        }
    }
}

/// Puts a message no receiver can process on `queue`, as an independent
/// producer would: right subject, a body that is not JSON.
pub(super) async fn send_poison(url: &str, queue: &str) -> Result<(), String> {
    let id = format!("poison-{}", uuid::Uuid::new_v4());
    send(url, queue, &id, &[], b"{this is not json".to_vec()).await
}

/// Sends one `EntityItemCreated` message with `body` to `queue`.
async fn send(
    url: &str,
    queue: &str,
    message_id: &str,
    properties: &[(String, String)],
    body: Vec<u8>,
) -> Result<(), String> {
    use fe2o3_amqp::{
        Connection, Sender, Session,
        types::{
            messaging::{ApplicationProperties, Message, MessageId, Properties, Target},
            primitives::{Binary, Symbol},
        },
    };
    let send = async {
        let mut connection =
            Connection::open(format!("apphost-test-{}", uuid::Uuid::new_v4()), url).await.map_err(|e| e.to_string())?;
        let mut session = Session::begin(&mut connection).await.map_err(|e| e.to_string())?;
        let target = Target::builder().address(queue.to_owned()).capabilities(vec![Symbol::from("queue")]).build();
        let mut sender = Sender::builder()
            .name("apphost-test")
            .target(target)
            .attach(&mut session)
            .await
            .map_err(|e| e.to_string())?;
        let mut application = ApplicationProperties::builder();
        for (k, v) in properties {
            application = application.insert(k.clone(), v.clone());
        }
        let message = Message::builder()
            .properties(
                Properties::builder()
                    .message_id(MessageId::String(message_id.to_owned()))
                    .subject("EntityItemCreated".to_owned())
                    .content_type("application/json")
                    .build(),
            )
            .application_properties(application.build())
            .data(Binary::from(body))
            .build();
        sender.send(message).await.map_err(|e| e.to_string())?;
        let _ = sender.close().await;
        let _ = session.end().await;
        let _ = connection.close().await;
        Ok::<(), String>(())
    };
    tokio::time::timeout(Duration::from_secs(20), send)
        .await
        .map_err(|_| "the broker did not take the message".to_owned())?
}
