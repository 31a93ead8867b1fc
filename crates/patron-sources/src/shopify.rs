//! Shopify webhooks: orders (`orders/create`, `orders/paid`, `orders/updated`)
//! and customers (`customers/create`, `customers/update`).
//!
//! - An order is a purchase with id `id`, customer `customer.id`, time
//!   `processed_at` (else `created_at`), value `total_price` (what the
//!   customer paid, in the shop's `currency`), and items from `line_items`
//!   (`product_id`, else `sku`, else `variant_id`; `quantity`, `price`). A
//!   guest checkout has no customer and is refused with that reason.
//! - Its customer's marketing consent comes along as a consent event:
//!   `customer.email_marketing_consent.state` and
//!   `customer.sms_marketing_consent.state`, passed as sent (Patron reads `subscribed` as yes,
//!   `not_subscribed` and `unsubscribed` as no), except `redacted` (no) and `pending` (says
//!   nothing); else the older `buyer_accepts_marketing` for e-mail.
//! - A customer webhook gives only that consent event.
//! - A refund webhook names its order but not its customer, and Patron finds
//!   an order through its customer, so it is refused with that reason.

use serde_json::{Map, Value, json};

use crate::{SourceError, Translation, amount_at, at, consent_event, id_at, lines_at};

pub(crate) fn translate(payload: &Map<String, Value>, out: &mut Translation) -> Result<(), SourceError> {
    if payload.contains_key("refund_line_items") {
        return Err(SourceError::Invalid {
            field: "order_id".into(),
            reason: "a Shopify refund names its order but not its customer, and Patron finds an order through its \
                     customer; send it as a Patron refund event with the order's customer_id (an amount is optional: \
                     without one, the refund takes what remains of the order)"
                .into(),
        });
    }
    if !payload.contains_key("line_items") {
        // A customer webhook: consent only.
        let customer = id_at(payload, "id")?.ok_or_else(|| SourceError::Missing("id".into()))?;
        let when = at(payload, "updated_at")
            .or(at(payload, "created_at"))
            .cloned()
            .ok_or_else(|| SourceError::Missing("updated_at".into()))?;
        let stamp = when.as_str().unwrap_or("").to_owned();
        let channels = channels(payload, None);
        match consent_event(&format!("shopify-customer-{customer}-consent-{stamp}"), &customer, when, channels) {
            Some(consent) => out.events.push(consent),
            None => out.ignored.push("a customer without a marketing consent state".into()),
        }
        return Ok(());
    }
    let order = id_at(payload, "id")?.ok_or_else(|| SourceError::Missing("id".into()))?;
    let customer = id_at(payload, "customer.id")?.ok_or_else(|| SourceError::Invalid {
        field: "customer.id".into(),
        reason: "missing: a guest checkout has no customer to score".into(),
    })?;
    let when = at(payload, "processed_at")
        .or(at(payload, "created_at"))
        .cloned()
        .ok_or_else(|| SourceError::Missing("created_at".into()))?;
    let mut purchase = json!({
        "type": "purchase", "event_id": order, "customer_id": customer, "timestamp": when,
        "items": lines_at(
            payload,
            "line_items",
            "line_items",
            &["product_id", "sku", "variant_id"],
            &[("quantity", "quantity"), ("price", "price")],
        )?,
    });
    let fields = purchase.as_object_mut().expect("json! object");
    if let Some(total) = amount_at(payload, "total_price")? {
        fields.insert("revenue".into(), total);
    }
    if let Some(currency) = at(payload, "currency") {
        fields.insert("currency".into(), currency.clone());
    }
    out.events.push(purchase);
    let customer_object = at(payload, "customer").and_then(Value::as_object);
    let channels = match customer_object {
        Some(c) => channels(c, at(payload, "buyer_accepts_marketing")),
        None => Map::new(),
    };
    if let Some(consent) = consent_event(&format!("{order}-consent"), &customer, when, channels) {
        out.events.push(consent);
    }
    Ok(())
}

/// A Shopify marketing consent state as Patron reads it: `subscribed`,
/// `not_subscribed` and `unsubscribed` pass as sent (Patron's consent words),
/// `redacted` (the customer's data was erased) is a no, and `pending`
/// (double opt-in not confirmed yet) says nothing.
fn consent_state(value: &Value) -> Option<Value> {
    match value.as_str().map(str::to_ascii_lowercase).as_deref() {
        Some("pending") => None,
        Some("redacted") => Some(Value::Bool(false)),
        _ => Some(value.clone()),
    }
}

/// E-mail and SMS consent stated by a customer object.
fn channels(customer: &Map<String, Value>, buyer_accepts_marketing: Option<&Value>) -> Map<String, Value> {
    let mut channels = Map::new();
    let email = at(customer, "email_marketing_consent.state")
        .and_then(consent_state)
        .or_else(|| buyer_accepts_marketing.or(at(customer, "accepts_marketing")).filter(|v| v.is_boolean()).cloned());
    if let Some(email) = email {
        channels.insert("email".into(), email);
    }
    if let Some(sms) = at(customer, "sms_marketing_consent.state").and_then(consent_state) {
        channels.insert("sms".into(), sms);
    }
    channels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shopify_consent_states_pass_as_words_except_redacted_and_pending() {
        assert_eq!(consent_state(&Value::from("subscribed")), Some(Value::from("subscribed")));
        assert_eq!(consent_state(&Value::from("REDACTED")), Some(Value::Bool(false)));
        assert_eq!(consent_state(&Value::from("pending")), None);
    }
}
