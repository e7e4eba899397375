//! From an AMQP message to an [`Event`], or the reason it can never be processed.

use chrono::{DateTime, Utc};
use entity_items::{EVENT_CREATED, Item};
use fe2o3_amqp::types::{
    messaging::{Body, Message, MessageId},
    primitives::{SimpleValue, Value},
};

/// A message that can be stored.
#[derive(Debug, Clone)]
pub struct Event {
    pub message_id: String,
    pub subject: String,
    pub item: Item,
    /// When the sender wrote the outbox row: the start of end-to-end latency.
    pub created_at: DateTime<Utc>,
    /// When the relay sent this copy, if the producer says (`sent_at`).
    pub sent_at: Option<DateTime<Utc>>,
    pub traceparent: Option<String>,
}

/// Decodes a message; `Err` is a poison verdict with a reason for the DLQ.
pub fn decode(message: &Message<Body<Value>>) -> Result<Event, String> {
    let properties = message.properties.as_ref();
    let message_id = match properties.and_then(|p| p.message_id.as_ref()) {
        Some(MessageId::String(s)) if !s.is_empty() => s.clone(),
        Some(MessageId::Uuid(u)) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        Some(MessageId::Ulong(n)) => n.to_string(),
        Some(MessageId::Binary(b)) if !b.is_empty() => b.iter().map(|x| format!("{x:02x}")).collect(),
        _ => return Err("the message has no `message_id`; it cannot be deduplicated".into()),
    };
    let subject = properties.and_then(|p| p.subject.clone()).unwrap_or_default();
    if subject != EVENT_CREATED {
        return Err(format!("unknown subject `{subject}` (expected `{EVENT_CREATED}`)"));
    }
    let payload: Vec<u8> = match &message.body {
        Body::Data(sections) => sections.iter().flat_map(|d| d.0.iter().copied()).collect(),
        // Some clients send JSON text as an amqp-value string; accept it too.
        Body::Value(v) => match &v.0 {
            Value::String(s) => s.clone().into_bytes(),
            Value::Binary(b) => b.to_vec(),
            other => return Err(format!("the body is an amqp-value of type {}, not JSON", value_kind(other))),
        },
        _ => return Err("the body is not a data section with JSON".into()),
    };
    let item = Item::from_event(&payload).map_err(|e| format!("invalid `{EVENT_CREATED}` payload: {e}"))?;
    let property = |name: &str| {
        message.application_properties.as_ref().and_then(|p| match p.0.get(name) {
            Some(SimpleValue::String(s)) => Some(s.clone()),
            _ => None,
        })
    };
    let time =
        |name: &str| property(name).and_then(|s| DateTime::parse_from_rfc3339(&s).ok()).map(|t| t.with_timezone(&Utc));
    let created_at = time("created_at").unwrap_or(item.created_at);
    Ok(Event { message_id, subject, item, created_at, sent_at: time("sent_at"), traceparent: property("traceparent") })
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Map(_) => "map",
        Value::List(_) => "list",
        _ => "scalar",
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::{
        messaging::{AmqpValue, Data, Properties},
        primitives::Binary,
    };

    use super::*;

    fn message(id: Option<&str>, subject: &str, body: Body<Value>) -> Message<Body<Value>> {
        let mut props = Properties::builder().subject(subject.to_owned());
        if let Some(id) = id {
            props = props.message_id(MessageId::String(id.to_owned()));
        }
        Message::builder().properties(props.build()).body(body).build()
    }

    fn data(json: &str) -> Body<Value> {
        Body::Data(vec![Data(Binary::from(json.as_bytes().to_vec()))].into())
    }

    const ITEM: &str =
        r#"{"id":"01a21b30-4f9f-71a4-9776-a253676833b1","name":"w","value":1.5,"createdAt":"2026-11-27T04:08:00Z"}"#;

    #[test]
    fn decodes_a_well_formed_event() {
        let event = decode(&message(Some("m1"), EVENT_CREATED, data(ITEM))).unwrap();
        assert_eq!(event.message_id, "m1");
        assert_eq!(event.item.name, "w");
        let as_string = Body::Value(AmqpValue(Value::String(ITEM.into())));
        assert!(decode(&message(Some("m1"), EVENT_CREATED, as_string)).is_ok());
    }

    #[test]
    fn poison_verdicts_say_why() {
        assert!(decode(&message(None, EVENT_CREATED, data(ITEM))).unwrap_err().contains("message_id"));
        assert!(
            decode(&message(Some("m"), "Surprise", data(ITEM))).unwrap_err().contains("unknown subject `Surprise`")
        );
        assert!(decode(&message(Some("m"), EVENT_CREATED, data("{oops"))).unwrap_err().contains("invalid"));
        let map = Body::Value(AmqpValue(Value::Map(Default::default())));
        assert!(decode(&message(Some("m"), EVENT_CREATED, map)).unwrap_err().contains("map"));
    }
}
