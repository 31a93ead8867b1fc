//! Google Analytics 4 Measurement Protocol requests (`events[]` with `params`).
//!
//! - The customer is `user_id`, else `client_id` (a device, which is what GA4
//!   has before a login).
//! - An event's time is its own `timestamp_micros`, else the request's, else
//!   the time the request arrived (GA4's own rule); read from a file, where
//!   nothing arrived, an event without a time is refused.
//! - `purchase` is a purchase with id `params.transaction_id`, value
//!   `params.value` (else the items' prices times quantities) and currency
//!   `params.currency`; items take `item_id` (else `item_name`),
//!   `item_category`, `price` and `quantity`.
//! - `refund` is a refund of `params.transaction_id` for `params.value`. Its
//!   id is the transaction, the word refund and the value, so a retried
//!   request counts once. A refund without a value (GA4's "whole order")
//!   refunds what remains of the order (id: the transaction and
//!   `-refund-all`); Patron looks the order up.
//! - Every other event name is ignored.

use serde_json::{Map, Value, json};

use crate::{SourceError, Translation, amount_at, at, first_id, id_at, lines_at};

pub(crate) fn translate(
    request: &Map<String, Value>,
    received_ms: Option<i64>,
    out: &mut Translation,
) -> Result<(), SourceError> {
    let events =
        at(request, "events").and_then(Value::as_array).ok_or_else(|| SourceError::Missing("events".into()))?;
    let customer =
        first_id(request, &["user_id", "client_id"])?.ok_or_else(|| SourceError::Missing("client_id".into()))?;
    let request_time = micros_to_ms(request, "timestamp_micros")?;
    for (i, event) in events.iter().enumerate() {
        let field = |name: &str| format!("events[{i}].{name}");
        let event = event.as_object().ok_or_else(|| SourceError::Invalid {
            field: format!("events[{i}]"),
            reason: "expected an object".into(),
        })?;
        let name = at(event, "name").and_then(Value::as_str).unwrap_or("");
        if name != "purchase" && name != "refund" {
            out.ignored.push(if name.is_empty() { "an event without a name".to_owned() } else { name.to_owned() });
            continue;
        }
        let at_ms = micros_to_ms(event, "timestamp_micros")
            .map_err(|e| prefixed(e, i))?
            .or(request_time)
            .or(received_ms)
            .ok_or_else(|| SourceError::Missing(field("timestamp_micros")))?;
        let params =
            at(event, "params").and_then(Value::as_object).ok_or_else(|| SourceError::Missing(field("params")))?;
        let transaction = id_at(params, "transaction_id")
            .map_err(|e| prefixed_params(e, i))?
            .ok_or_else(|| SourceError::Missing(field("params.transaction_id")))?;
        let value = amount_at(params, "value").map_err(|e| prefixed_params(e, i))?;
        let mut native = if name == "purchase" {
            let mut purchase = json!({
                "type": "purchase", "event_id": transaction, "customer_id": customer, "timestamp": at_ms,
                "items": lines_at(
                    params,
                    "items",
                    &field("params.items"),
                    &["item_id", "item_name"],
                    &[("item_category", "category"), ("quantity", "quantity"), ("price", "price")],
                )?,
            });
            if let Some(value) = value {
                purchase.as_object_mut().expect("json! object").insert("revenue".into(), value);
            }
            purchase
        } else {
            let value_text = match &value {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "all".to_owned(),
            };
            let mut refund = json!({
                "type": "refund", "event_id": format!("{transaction}-refund-{value_text}"), "customer_id": customer,
                "timestamp": at_ms, "order_id": transaction,
            });
            if let Some(value) = value {
                refund.as_object_mut().expect("json! object").insert("amount".into(), value);
            }
            refund
        };
        if let Some(currency) = at(params, "currency") {
            native.as_object_mut().expect("json! object").insert("currency".into(), currency.clone());
        }
        out.events.push(native);
    }
    Ok(())
}

fn prefixed(e: SourceError, i: usize) -> SourceError {
    match e {
        SourceError::Missing(f) => SourceError::Missing(format!("events[{i}].{f}")),
        SourceError::Invalid { field, reason } => {
            SourceError::Invalid { field: format!("events[{i}].{field}"), reason }
        }
        other => other,
    }
}

fn prefixed_params(e: SourceError, i: usize) -> SourceError {
    prefixed(
        match e {
            SourceError::Missing(f) => SourceError::Missing(format!("params.{f}")),
            SourceError::Invalid { field, reason } => SourceError::Invalid { field: format!("params.{field}"), reason },
            other => other,
        },
        i,
    )
}

/// `timestamp_micros` (an integer, or digits as text) in milliseconds.
fn micros_to_ms(object: &Map<String, Value>, field: &str) -> Result<Option<i64>, SourceError> {
    let invalid = |reason: &str| SourceError::Invalid { field: field.to_owned(), reason: reason.to_owned() };
    match at(object, field) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(|m| Some(m.div_euclid(1000))).ok_or_else(|| invalid("expected whole microseconds"))
        }
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(|m| Some(m.div_euclid(1000)))
            .map_err(|_| invalid("expected whole microseconds")),
        Some(_) => Err(invalid("expected whole microseconds")),
    }
}
