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
    let response = client.post(format!("{sender}/api/EntityItems")).json(&body).send().await?;
    let status = response.status();
    if status != reqwest::StatusCode::CREATED {
        return Ok(Err(status));
    }
    let item: Value = response.json().await?;
    Ok(item["id"].as_str().map(str::to_owned).ok_or(status))
}

/// Inbox rows the receiver committed since `since` (its database's clock).
pub(super) async fn inbox_rows_since(pool: &sqlx::PgPool, since: chrono::DateTime<chrono::Utc>) -> Result<i64, String> {
    sqlx::query_scalar("SELECT count(*) FROM inbox WHERE received_at >= $1")
        .bind(since)
        .fetch_one(pool)
        .await
        .map_err(|e| format!("could not count the receiver's inbox rows: {e}"))
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
    use fe2o3_amqp::{
        Connection, Sender, Session,
        types::{
            messaging::{Message, MessageId, Properties, Target},
            primitives::{Binary, Symbol},
        },
    };
    let send = async {
        let mut connection = Connection::open(format!("apphost-poison-{}", uuid::Uuid::new_v4()), url)
            .await
            .map_err(|e| e.to_string())?;
        let mut session = Session::begin(&mut connection).await.map_err(|e| e.to_string())?;
        let target = Target::builder().address(queue.to_owned()).capabilities(vec![Symbol::from("queue")]).build();
        let mut sender = Sender::builder()
            .name("apphost-poison")
            .target(target)
            .attach(&mut session)
            .await
            .map_err(|e| e.to_string())?;
        let message = Message::builder()
            .properties(
                Properties::builder()
                    .message_id(MessageId::String(format!("poison-{}", uuid::Uuid::new_v4())))
                    .subject("EntityItemCreated".to_owned())
                    .content_type("application/json")
                    .build(),
            )
            .data(Binary::from(b"{this is not json".to_vec()))
            .build();
        sender.send(message).await.map_err(|e| e.to_string())?;
        let _ = sender.close().await;
        let _ = session.end().await;
        let _ = connection.close().await;
        Ok::<(), String>(())
    };
    tokio::time::timeout(Duration::from_secs(20), send)
        .await
        .map_err(|_| "the broker did not take the poison message".to_owned())?
}
