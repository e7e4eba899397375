//! Entity items: parsing a request body into a valid [`NewItem`], and the
//! stored [`Item`] as the API and the event show it.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use service_defaults::http::Problem;
use uuid::Uuid;

pub const NAME_MAX_CHARS: usize = 200;
pub const EVENT_CREATED: &str = "EntityItemCreated";

/// A name of 1 to 200 characters, not blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemName(String);

impl ItemName {
    pub fn parse(raw: String) -> Result<Self, String> {
        let chars = raw.chars().count();
        if raw.trim().is_empty() {
            Err("must not be empty".into())
        } else if chars > NAME_MAX_CHARS {
            Err(format!("must be at most {NAME_MAX_CHARS} characters, got {chars}"))
        } else if raw.chars().any(char::is_control) {
            Err("must not contain control characters".into())
        } else {
            Ok(Self(raw))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewItem {
    pub name: ItemName,
    pub value: Decimal,
}

impl NewItem {
    /// Parses `{ "name": string, "value": number }`, naming every bad field.
    /// Field names match case-insensitively, as ASP.NET's web defaults do.
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body).map_err(|e| {
            let problem = if e.is_data() {
                "the body must be a JSON object".to_owned()
            } else {
                format!("the body is not valid JSON: {e}")
            };
            Problem::new(http::StatusCode::BAD_REQUEST, "malformed request body").detail(problem)
        })?;
        let mut problem = Problem::new(http::StatusCode::BAD_REQUEST, "one or more fields are invalid");
        let (mut name, mut value) = (None, None);
        for (key, raw) in fields {
            match key.to_ascii_lowercase().as_str() {
                "name" => name = Some(raw),
                "value" => value = Some(raw),
                _ => problem = problem.field(key, "is not a known field (expected `name` and `value`)"),
            }
        }
        let name = match name.map(|raw| serde_json::from_str::<Option<String>>(raw.get())) {
            None | Some(Ok(None)) => Err("is required".to_owned()),
            Some(Err(_)) => Err("must be a string".to_owned()),
            Some(Ok(Some(s))) => ItemName::parse(s),
        };
        let value = match value {
            None => Err("is required".to_owned()),
            Some(raw) => parse_decimal(raw.get()),
        };
        match (name, value) {
            (Ok(name), Ok(value)) if problem.errors.is_empty() => Ok(Self { name, value }),
            (name, value) => {
                if let Err(e) = name {
                    problem = problem.field("name", e);
                }
                if let Err(e) = value {
                    problem = problem.field("value", e);
                }
                Err(problem)
            }
        }
    }
}

/// A JSON number, exactly (no trip through `f64`).
fn parse_decimal(raw: &str) -> Result<Decimal, String> {
    let raw = raw.trim();
    if raw == "null" {
        return Err("is required".into());
    }
    if !raw.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        return Err("must be a number".into());
    }
    let parsed = if raw.contains(['e', 'E']) { Decimal::from_scientific(raw) } else { Decimal::from_str_exact(raw) };
    let out_of_range = || "is out of range (at most 28 significant digits, magnitude at most 7.9e28)".to_owned();
    // The documented bound (OpenAPI `minimum`/`maximum`), a little inside Decimal's own.
    let limit = Decimal::from_i128_with_scale(79_000_000_000_000_000_000_000_000_000, 0);
    parsed
        .map(|d| d.normalize())
        .map_err(|_| out_of_range())
        .and_then(|d| if d.abs() > limit { Err(out_of_range()) } else { Ok(d) })
}

/// A stored item, as the API returns it and as the event carries it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub id: Uuid,
    pub name: String,
    #[serde(serialize_with = "decimal_as_number")]
    pub value: Decimal,
    #[serde(serialize_with = "rfc3339_micros")]
    pub created_at: DateTime<Utc>,
}

impl Item {
    /// Reads an `EntityItemCreated` payload. A tolerant reader: fields it does
    /// not know are ignored, but every field it needs must be present and valid.
    pub fn from_event(payload: &[u8]) -> Result<Self, String> {
        let fields: BTreeMap<String, Box<RawValue>> =
            serde_json::from_slice(payload).map_err(|e| format!("the payload is not a JSON object: {e}"))?;
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.get())
                .ok_or_else(|| format!("`{name}` is missing"))
        };
        let string = |name: &str| {
            field(name)
                .and_then(|raw| serde_json::from_str::<String>(raw).map_err(|_| format!("`{name}` must be a string")))
        };
        let id = Uuid::parse_str(&string("id")?).map_err(|_| "`id` must be a UUID".to_owned())?;
        let name = ItemName::parse(string("name")?).map_err(|e| format!("`name` {e}"))?;
        let value = parse_decimal(field("value")?).map_err(|e| format!("`value` {e}"))?;
        let created_at = DateTime::parse_from_rfc3339(&string("createdAt")?)
            .map_err(|_| "`createdAt` must be an RFC 3339 time".to_owned())?
            .with_timezone(&Utc);
        Ok(Self { id, name: name.0, value, created_at })
    }
}

/// Writes a decimal as a JSON number with all its digits.
pub fn decimal_as_number<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let raw = RawValue::from_string(value.normalize().to_string()).map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

fn rfc3339_micros<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(body: &str) -> BTreeMap<String, Vec<String>> {
        NewItem::parse(body.as_bytes()).unwrap_err().errors
    }

    #[test]
    fn parses_a_valid_item_exactly() {
        let item = NewItem::parse(br#"{"name":"widget","value":12345678901234567890.123456789}"#).unwrap();
        assert_eq!(item.name.as_str(), "widget");
        assert_eq!(item.value.to_string(), "12345678901234567890.123456789");
        let item = NewItem::parse(br#"{"Name":"w","Value":1.5e3}"#).unwrap();
        assert_eq!(item.value, Decimal::from(1500));
    }

    #[test]
    fn names_every_bad_field() {
        assert_eq!(errors(r#"{"value":1}"#)["name"], ["is required"]);
        assert_eq!(errors(r#"{"name":"","value":1}"#)["name"], ["must not be empty"]);
        assert_eq!(errors(r#"{"name":"  ","value":1}"#)["name"], ["must not be empty"]);
        assert_eq!(errors(r#"{"name":7,"value":1}"#)["name"], ["must be a string"]);
        let long = "x".repeat(201);
        assert!(errors(&format!(r#"{{"name":"{long}","value":1}}"#))["name"][0].contains("at most 200"));
        assert_eq!(errors(r#"{"name":"a"}"#)["value"], ["is required"]);
        assert_eq!(errors(r#"{"name":"a","value":"12"}"#)["value"], ["must be a number"]);
        assert_eq!(errors(r#"{"name":"a","value":true}"#)["value"], ["must be a number"]);
        assert!(errors(r#"{"name":"a","value":1e400}"#)["value"][0].contains("out of range"));
        assert!(errors(r#"{"name":"a","value":-7.900000000000001e28}"#)["value"][0].contains("out of range"));
        assert!(NewItem::parse(br#"{"name":"a","value":7.9e28}"#).is_ok(), "the bound itself is in range");
        assert!(errors(r#"{"name":"a","value":1,"colour":"red"}"#)["colour"][0].contains("not a known field"));
        let both = errors(r#"{}"#);
        assert!(both.contains_key("name") && both.contains_key("value"));
    }

    #[test]
    fn two_hundred_characters_is_fine_even_multibyte() {
        let name = "é".repeat(200);
        assert!(NewItem::parse(format!(r#"{{"name":"{name}","value":0}}"#).as_bytes()).is_ok());
    }

    #[test]
    fn malformed_json_is_a_problem_without_fields() {
        let p = NewItem::parse(b"{\"name\": ").unwrap_err();
        assert_eq!(p.status, 400);
        assert!(p.detail.unwrap().contains("not valid JSON"));
        let p = NewItem::parse(b"[1,2]").unwrap_err();
        assert!(p.detail.unwrap().contains("JSON object"));
    }

    #[test]
    fn an_event_round_trips_and_bad_events_say_why() {
        let item = Item {
            id: Uuid::now_v7(),
            name: "n".into(),
            value: "-3.25".parse().unwrap(),
            created_at: DateTime::from_timestamp(1_700_000_000, 123_000).unwrap(),
        };
        let json = serde_json::to_string(&item).unwrap();
        assert_eq!(Item::from_event(json.as_bytes()).unwrap(), item);
        let with_extra = json.replacen('{', r#"{"schemaVersion":2,"#, 1);
        assert_eq!(Item::from_event(with_extra.as_bytes()).unwrap(), item);
        assert!(Item::from_event(b"not json").unwrap_err().contains("not a JSON object"));
        assert!(
            Item::from_event(br#"{"id":"x","name":"n","value":1,"createdAt":"2024-01-01T00:00:00Z"}"#)
                .unwrap_err()
                .contains("`id` must be a UUID")
        );
        let no_value = json.replace(r#""value":-3.25,"#, "");
        assert!(Item::from_event(no_value.as_bytes()).unwrap_err().contains("`value` is missing"));
    }

    #[test]
    fn item_serialises_value_as_an_exact_number() {
        let item = Item {
            id: Uuid::nil(),
            name: "n".into(),
            value: "0.10000000000000000000000001".parse().unwrap(),
            created_at: DateTime::from_timestamp(0, 0).unwrap(),
        };
        let json = serde_json::to_string(&item).unwrap();
        assert!(json.contains(r#""value":0.10000000000000000000000001"#), "{json}");
        assert!(json.contains(r#""createdAt":"1970-01-01T00:00:00.000000Z""#), "{json}");
    }
}
