//! Snowplow enriched events in JSON (the shape the analytics SDKs'
//! `transform` gives): the classic e-commerce `transaction` event.
//!
//! - `transaction` is a purchase with id `tr_orderid` (else `event_id`),
//!   value `tr_total` and currency `tr_currency`.
//! - The customer is `user_id`, else `domain_userid` (a first-party cookie),
//!   else `network_userid`.
//! - The time is `derived_tstamp`, else `collector_tstamp`; Snowplow writes
//!   them as `2026-11-23 10:15:00.000` in UTC, which is read as such.
//! - `transaction_item` events are ignored: their order's value is already in
//!   its `transaction`, and joining the lines to it is not done yet. Every
//!   other event is ignored too.

use serde_json::{Map, Value, json};

use crate::{SourceError, Translation, amount_at, at, first_id};

pub(crate) fn translate(event: &Map<String, Value>, out: &mut Translation) -> Result<(), SourceError> {
    let name = at(event, "event").or(at(event, "event_name")).and_then(Value::as_str).unwrap_or("");
    if name != "transaction" {
        out.ignored.push(if name.is_empty() { "an event without a name".to_owned() } else { name.to_owned() });
        return Ok(());
    }
    let order =
        first_id(event, &["tr_orderid", "event_id"])?.ok_or_else(|| SourceError::Missing("tr_orderid".into()))?;
    let customer = first_id(event, &["user_id", "domain_userid", "network_userid"])?
        .ok_or_else(|| SourceError::Missing("user_id".into()))?;
    let stamp = at(event, "derived_tstamp")
        .or(at(event, "collector_tstamp"))
        .and_then(Value::as_str)
        .ok_or_else(|| SourceError::Missing("collector_tstamp".into()))?;
    let total = amount_at(event, "tr_total")?.ok_or_else(|| SourceError::Missing("tr_total".into()))?;
    let mut purchase = json!({
        "type": "purchase", "event_id": order, "customer_id": customer, "timestamp": rfc3339(stamp), "revenue": total,
    });
    if let Some(currency) = at(event, "tr_currency") {
        purchase.as_object_mut().expect("json! object").insert("currency".into(), currency.clone());
    }
    out.events.push(purchase);
    Ok(())
}

/// `2026-11-23 10:15:00.000` (UTC, Snowplow's form) as RFC 3339; RFC 3339 as is.
fn rfc3339(stamp: &str) -> String {
    let stamp = stamp.trim();
    match stamp.split_once(' ') {
        Some((date, time)) if !time.contains(['Z', '+']) => format!("{date}T{time}Z"),
        _ => stamp.to_owned(),
    }
}
