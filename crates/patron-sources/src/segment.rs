//! Segment's Spec: `track` calls of the e-commerce events (v2), and the
//! consent preference event.
//!
//! - `Order Completed` is a purchase. Its id is `properties.order_id`, so an
//!   order sent twice (a retry, or two tools) counts once; without one, the
//!   call's `messageId`. Its value is `total` (what the customer paid), else
//!   `revenue`, else the products' prices times quantities.
//! - `Order Refunded` is a refund of `properties.order_id`, with id the call's
//!   `messageId` (each refund is its own message) and amount `total`, else
//!   `revenue`, else what remains of the order (a full refund).
//! - `Segment Consent Preference Updated` states consent for the categories
//!   named `email`, `sms` or `push` in `context.consent.categoryPreferences`.
//! - The customer is `userId`, else `anonymousId`; the time `timestamp`,
//!   else `originalTimestamp`, `sentAt` or `receivedAt`.
//! - Products: `product_id`, else `sku`, else `id` (Segment sends both
//!   `product_id` and `sku`; Patron keeps the product id). Other calls and
//!   events (`page`, `identify`, `Product Viewed`…) are ignored.

use serde_json::{Map, Value, json};

use crate::{SourceError, Translation, amount_at, at, consent_event, first_id, id_at, lines_at};

pub(crate) fn translate(call: &Map<String, Value>, out: &mut Translation) -> Result<(), SourceError> {
    let kind = at(call, "type").and_then(Value::as_str).unwrap_or("");
    if kind != "track" {
        out.ignored.push(if kind.is_empty() { "a call without a type".to_owned() } else { kind.to_owned() });
        return Ok(());
    }
    let event = at(call, "event").and_then(Value::as_str).unwrap_or("");
    match event {
        "Order Completed" | "Order Refunded" | "Segment Consent Preference Updated" => {}
        other => {
            out.ignored.push(format!("track {other:?}"));
            return Ok(());
        }
    }
    let customer = first_id(call, &["userId", "anonymousId"])?.ok_or_else(|| SourceError::Missing("userId".into()))?;
    let timestamp = ["timestamp", "originalTimestamp", "sentAt", "receivedAt"]
        .iter()
        .find_map(|p| at(call, p).cloned())
        .ok_or_else(|| SourceError::Missing("timestamp".into()))?;
    let message_id = id_at(call, "messageId")?;
    match event {
        "Order Completed" => {
            let order = id_at(call, "properties.order_id")?;
            let event_id =
                order.clone().or(message_id).ok_or_else(|| SourceError::Missing("properties.order_id".into()))?;
            let mut purchase = json!({
                "type": "purchase", "event_id": event_id, "customer_id": customer, "timestamp": timestamp,
                "items": lines_at(
                    call,
                    "properties.products",
                    "properties.products",
                    &["product_id", "sku", "id"],
                    &[("category", "category"), ("quantity", "quantity"), ("price", "price")],
                )?,
            });
            let fields = purchase.as_object_mut().expect("json! object");
            if let Some(value) = amount_at(call, "properties.total")?.or(amount_at(call, "properties.revenue")?) {
                fields.insert("revenue".into(), value);
            }
            if let Some(currency) = at(call, "properties.currency") {
                fields.insert("currency".into(), currency.clone());
            }
            out.events.push(purchase);
        }
        "Order Refunded" => {
            let order = id_at(call, "properties.order_id")?
                .ok_or_else(|| SourceError::Missing("properties.order_id".into()))?;
            let event_id = message_id.unwrap_or_else(|| format!("{order}-refund"));
            let mut refund = json!({
                "type": "refund", "event_id": event_id, "customer_id": customer, "timestamp": timestamp,
                "order_id": order,
            });
            // Without one, the refund takes what remains of the order.
            if let Some(amount) = amount_at(call, "properties.total")?.or(amount_at(call, "properties.revenue")?) {
                refund.as_object_mut().expect("json! object").insert("amount".into(), amount);
            }
            if let Some(currency) = at(call, "properties.currency") {
                refund.as_object_mut().expect("json! object").insert("currency".into(), currency.clone());
            }
            out.events.push(refund);
        }
        _ => {
            let event_id = message_id.ok_or_else(|| SourceError::Missing("messageId".into()))?;
            let preferences = at(call, "context.consent.categoryPreferences")
                .and_then(Value::as_object)
                .ok_or_else(|| SourceError::Missing("context.consent.categoryPreferences".into()))?;
            let mut channels = Map::new();
            for (name, value) in preferences {
                let channel = name.to_ascii_lowercase();
                // The value passes as sent: Patron's validator reads booleans
                // and consent words, and names the field of anything else.
                if ["email", "sms", "push"].contains(&channel.as_str()) {
                    channels.insert(channel, value.clone());
                }
            }
            match consent_event(&event_id, &customer, timestamp, channels) {
                Some(consent) => out.events.push(consent),
                None => out.ignored.push("consent for no email, sms or push category".to_owned()),
            }
        }
    }
    Ok(())
}
