//! The wire format of every outbox message (`docs/contracts.md`, "Messages on the wire").

use chrono::{DateTime, SecondsFormat, Utc};
use fe2o3_amqp::types::{
    messaging::{ApplicationProperties, Data, Header, Message, MessageId, Properties},
    primitives::{Binary, SimpleValue},
};
use uuid::Uuid;

/// Artemis's duplicate-detection property: a re-sent message with the same
/// value is dropped by the broker. Set only with `broker_dedup`: Artemis
/// stores each such message in a journal transaction of its own with the id,
/// which here cost a warm broker about 40 % of its durable throughput.
pub const DUPLICATE_ID_PROPERTY: &str = "_AMQ_DUPL_ID";
pub const CREATED_AT_PROPERTY: &str = "created_at";
pub const TRACEPARENT_PROPERTY: &str = "traceparent";
/// When the relay handed this copy to the link (RFC 3339, µs): where the
/// receiver's share of a message's time begins.
pub const SENT_AT_PROPERTY: &str = "sent_at";
pub const CONTENT_TYPE: &str = "application/json";

/// One outbox row as the relay reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    /// Where the claim found the row (`ctid`, as text): the batch's deletes
    /// go by it, a plan no statistics can change (see the relay's claim).
    pub ctid: String,
    pub id: Uuid,
    pub event_type: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub traceparent: Option<String>,
    pub attempts: i32,
}

/// The AMQP message for a row: durable, `message_id` = outbox id, subject =
/// event type, JSON in a `data` section, and the application properties that
/// let the consumer measure lag and continue the trace (and, with
/// `broker_dedup`, Artemis drop a re-sent copy).
pub fn to_amqp(row: &OutboxRow, broker_dedup: bool) -> Message<Data> {
    let id = row.id.to_string();
    let mut properties = ApplicationProperties::builder();
    if broker_dedup {
        properties = properties.insert(DUPLICATE_ID_PROPERTY, SimpleValue::String(id.clone()));
    }
    properties = properties
        .insert(CREATED_AT_PROPERTY, SimpleValue::String(row.created_at.to_rfc3339_opts(SecondsFormat::Micros, true)));
    if let Some(traceparent) = &row.traceparent {
        properties = properties.insert(TRACEPARENT_PROPERTY, SimpleValue::String(traceparent.clone()));
    }
    Message::builder()
        .header(Header { durable: true, ..Default::default() })
        .properties(
            Properties::builder()
                .message_id(MessageId::String(id))
                .subject(row.event_type.clone())
                .content_type(CONTENT_TYPE)
                .build(),
        )
        .application_properties(properties.build())
        .data(Binary::from(row.payload.as_bytes().to_vec()))
        .build()
}
