//! Source adapters: what backends already emit, as Patron's own events.
//!
//! A backend team adopts Patron only if it can point what it already sends
//! at it. Each adapter reads one record of a source's documented e-commerce
//! events (a Segment call, a GA4 Measurement Protocol request, a Shopify
//! webhook, a Snowplow enriched event in JSON) and writes the events of
//! Patron's wire format (README "Events") it stands for: purchases, refunds,
//! consent. Those then go through the same validation as any event, so an
//! adapter decides only names and shapes, never what is valid.
//!
//! - A record may give several events (a GA4 request carries a list; a
//!   Shopify order also states the buyer's marketing consent).
//! - What is not e-commerce (a page view, a login) is *ignored* and counted
//!   with its name, never rejected: a source's stream is mostly such events.
//! - A record that claims to be e-commerce but lacks what Patron needs is an
//!   error naming the source's own field (`properties.order_id: missing`).
//!
//! The mappings, field by field, are tables in the README ("Sending events
//! from your stack"); each module's docs say why each choice was made.

use serde_json::{Map, Value};

mod ga4;
mod segment;
mod shopify;
mod snowplow;

/// A supported source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Segment's Spec (track, identify), e-commerce events v2.
    Segment,
    /// Google Analytics 4 Measurement Protocol requests.
    Ga4,
    /// Shopify webhooks (`orders/create`, `orders/paid`, `customers/update`).
    Shopify,
    /// Snowplow enriched events as JSON (the analytics SDKs' shape).
    Snowplow,
}

impl Source {
    /// Every source.
    pub const ALL: [Self; 4] = [Self::Segment, Self::Ga4, Self::Shopify, Self::Snowplow];

    /// The name in `?source=` and `--source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Segment => "segment",
            Self::Ga4 => "ga4",
            Self::Shopify => "shopify",
            Self::Snowplow => "snowplow",
        }
    }

    /// The source named `text` (case-insensitive).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// The Patron events one record stands for. `received_ms` is when the
    /// record arrived: GA4 dates events without a timestamp by it, as GA4
    /// does (`None`, as for a file: such events are refused).
    pub fn translate(self, record: &Value, received_ms: Option<i64>) -> Result<Translation, SourceError> {
        let object = record.as_object().ok_or_else(|| SourceError::NotAnObject(kind_of(record)))?;
        let mut out = Translation::default();
        match self {
            Self::Segment => segment::translate(object, &mut out)?,
            Self::Ga4 => ga4::translate(object, received_ms, &mut out)?,
            Self::Shopify => shopify::translate(object, &mut out)?,
            Self::Snowplow => snowplow::translate(object, &mut out)?,
        }
        Ok(out)
    }
}

/// What one source record became.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    /// Patron events, in the wire format.
    pub events: Vec<Value>,
    /// Names of what the record held that is not e-commerce (ignored).
    pub ignored: Vec<String>,
}

/// Why a record cannot be translated; the field is the source's own.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The record is not a JSON object.
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// A field the event needs is missing.
    #[error("{0}: missing")]
    Missing(String),
    /// A field is there but unusable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The source's field.
        field: String,
        /// Why.
        reason: String,
    },
}

impl SourceError {
    /// The field at fault, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::NotAnObject(_) => None,
            Self::Missing(field) | Self::Invalid { field, .. } => Some(field),
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value at a dotted `path` (`properties.order_id`), if present and not null.
fn at<'a>(object: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = object.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    (!value.is_null()).then_some(value)
}

/// An id at `path`: a non-empty string, or an integer written as text
/// (Shopify and GA4 send numeric ids).
fn id_at(object: &Map<String, Value>, path: &str) -> Result<Option<String>, SourceError> {
    match at(object, path) {
        None => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(SourceError::Invalid {
            field: path.to_owned(),
            reason: format!("expected a string or an integer id, got {}", kind_of(other)),
        }),
    }
}

/// The first of `paths` that holds an id.
fn first_id(object: &Map<String, Value>, paths: &[&str]) -> Result<Option<String>, SourceError> {
    for path in paths {
        if let Some(id) = id_at(object, path)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// An amount at `path` as sent (a number or decimal text; validation checks it).
fn amount_at(object: &Map<String, Value>, path: &str) -> Result<Option<Value>, SourceError> {
    match at(object, path) {
        None => Ok(None),
        Some(v @ (Value::Number(_) | Value::String(_))) => Ok(Some(v.clone())),
        Some(other) => Err(SourceError::Invalid {
            field: path.to_owned(),
            reason: format!("expected an amount, got {}", kind_of(other)),
        }),
    }
}

/// The array at `path` in `object` as Patron items: each line's id is the
/// first of `ids` it has, and each `(from, to)` field is copied as sent.
/// Errors name the line as `shown[i].field`.
fn lines_at(
    object: &Map<String, Value>,
    path: &str,
    shown: &str,
    ids: &[&str],
    copies: &[(&str, &str)],
) -> Result<Vec<Value>, SourceError> {
    let Some(lines) = at(object, path) else { return Ok(Vec::new()) };
    let lines = lines
        .as_array()
        .ok_or_else(|| SourceError::Invalid { field: shown.to_owned(), reason: "expected an array".into() })?;
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let field = |name: &str| format!("{shown}[{i}].{name}");
            let line = line.as_object().ok_or_else(|| SourceError::Invalid {
                field: format!("{shown}[{i}]"),
                reason: "expected an object".into(),
            })?;
            let id = first_id(line, ids)?.ok_or_else(|| SourceError::Missing(field(ids[0])))?;
            let mut item = serde_json::json!({ "product_id": id });
            let fields = item.as_object_mut().expect("json! object");
            for (from, to) in copies {
                if let Some(value) = at(line, from) {
                    fields.insert((*to).into(), value.clone());
                }
            }
            Ok(item)
        })
        .collect()
}

/// A consent event, or `None` when no channel is stated.
fn consent_event(event_id: &str, customer_id: &str, timestamp: Value, channels: Map<String, Value>) -> Option<Value> {
    (!channels.is_empty()).then(|| {
        serde_json::json!({
            "type": "consent", "event_id": event_id, "customer_id": customer_id,
            "timestamp": timestamp, "channels": channels,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_named_as_in_the_query_string() {
        for s in Source::ALL {
            assert_eq!(Source::parse(s.as_str()), Some(s));
        }
        assert_eq!(Source::parse("GA4"), Some(Source::Ga4));
        assert_eq!(Source::parse("mixpanel"), None);
    }

    #[test]
    fn a_record_that_is_not_an_object_is_refused_with_what_it_is() {
        let err = Source::Segment.translate(&serde_json::json!([1]), None).unwrap_err();
        assert_eq!(err.to_string(), "expected a JSON object, got an array");
    }
}
