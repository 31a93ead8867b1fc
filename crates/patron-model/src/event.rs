//! Purchase, refund and consent events: the wire format (DESIGN.md §2), its
//! aliases, and validation into typed, normalised events.
//!
//! Decoding borrows from the input (no copies of ids until validation passes)
//! and every rejection names the field and the reason, e.g.
//! `items[1].price: must not be negative, got "-3.00"`.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::{Value, json};

use crate::money::{Currency, CurrencyTable, Decimal};
use crate::quote::{preview, truncate_message};
use crate::time::{EARLIEST_MS, MS_PER_DAY, Timestamp};

/// Longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Longest acquisition channel name accepted, in bytes: channels are a
/// short vocabulary (`paid_search`, `referral`…) that SQL groups by.
pub const MAX_CHANNEL_BYTES: usize = 64;

/// Deepest JSON nesting accepted inside one event (event → items → item is 3).
pub const MAX_EVENT_DEPTH: usize = 8;

/// Largest amount accepted (revenue, refund, unit price, line total), in
/// minor units of the base currency: 10^14, one trillion euros. Bounding each
/// amount keeps every per-customer and per-product sum far from the 64-bit
/// limit; those sums also saturate rather than wrap (see `patron-state`).
pub const MAX_AMOUNT_MINOR: i64 = 100_000_000_000_000;

/// Largest quantity of one line item.
pub const MAX_QUANTITY: i128 = 1_000_000;

/// Most line items in one purchase.
pub const MAX_ITEMS_PER_EVENT: usize = 1_000;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);
        impl $name {
            /// Validates and wraps an id: non-empty, at most [`MAX_ID_BYTES`]
            /// bytes. (The validator also refuses control characters in new
            /// events; ids already in a log are read back without that rule.)
            pub fn new(text: &str) -> Result<Self, String> {
                if text.trim().is_empty() {
                    Err("must not be empty".into())
                } else if text.len() > MAX_ID_BYTES {
                    Err(format!("is {} bytes long, the limit is {MAX_ID_BYTES}", text.len()))
                } else {
                    Ok(Self(text.into()))
                }
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// Idempotency key of an event, unique per customer.
    EventId
);
id_type!(
    /// A customer's id as the shop knows it.
    CustomerId
);
id_type!(
    /// A product's id (SKU).
    ProductId
);

/// One line of a purchase, prices in base-currency minor units.
#[derive(Clone, Debug, PartialEq)]
pub struct LineItem {
    /// The product.
    pub product_id: ProductId,
    /// Its category, if the shop sent one.
    pub category: Option<Box<str>>,
    /// Units bought (positive).
    pub quantity: Decimal,
    /// Unit price in base-currency minor units, if sent.
    pub unit_price_minor: Option<i64>,
}

/// A purchase (order).
#[derive(Clone, Debug, PartialEq)]
pub struct Purchase {
    /// The order id, when it differs from the event id.
    pub order_id: Option<Box<str>>,
    /// The lines (may be empty when only revenue is known).
    pub items: Vec<LineItem>,
    /// Order revenue in base-currency minor units.
    pub revenue_minor: i64,
    /// What it cost to win this customer, when the order says (usually on
    /// the first order).
    pub acquisition: Option<Acquisition>,
}

/// What it cost to win a customer and through which channel, as stated on a
/// purchase or on a `customer` event. The latest statement applied wins.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Acquisition {
    /// The cost in base-currency minor units, when stated.
    pub cost_minor: Option<i64>,
    /// The marketing channel that won the customer (`paid_search`, `referral`…), when stated.
    pub channel: Option<Box<str>>,
}

/// A refund of (part of) an order.
#[derive(Clone, Debug, PartialEq)]
pub struct Refund {
    /// The refunded order, when known.
    pub order_id: Option<Box<str>>,
    /// Refunded amount in base-currency minor units (positive); `None`:
    /// whatever remains of the order (which `order_id` then names), as
    /// GA4 sends a whole-order refund.
    pub amount_minor: Option<i64>,
}

/// Marketing consent per channel; `None` leaves a channel unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// E-mail.
    pub email: Option<bool>,
    /// SMS.
    pub sms: Option<bool>,
    /// Push notifications.
    pub push: Option<bool>,
}

/// Longest name of a consent channel beyond email, sms and push, in bytes.
pub const MAX_CHANNEL_NAME: usize = 32;
/// Most channels beyond email, sms and push one consent event may state.
pub const MAX_OTHER_CHANNELS: usize = 16;

/// Consent on a channel other than email, sms and push (`whatsapp`,
/// `postal`…), kept per customer beside the three contract columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelConsent {
    /// The channel, lowercase (`[a-z0-9_-]`, at most [`MAX_CHANNEL_NAME`] bytes).
    pub channel: Box<str>,
    /// Given (true) or refused (false).
    pub given: bool,
}

/// What a consent event states: the three contract channels, and any others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsentChange {
    /// Email, SMS and push.
    pub channels: Consent,
    /// Other channels, by name, in name order.
    pub other: Vec<ChannelConsent>,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// An order.
    Purchase(Purchase),
    /// Money returned.
    Refund(Refund),
    /// Consent changed.
    Consent(ConsentChange),
    /// Facts about the customer outside any order: what it cost to win them.
    Customer(Acquisition),
    /// How a campaign member reacted to a contact.
    CampaignResponse(CampaignResponse),
}

/// A member's reaction to a campaign's contact (`campaign_response`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignResponse {
    /// The campaign that made the contact.
    pub campaign_id: Box<str>,
    /// What the member did.
    pub response: Response,
}

/// The reactions a channel reports, from weakest to strongest engagement
/// (`unsubscribed` and `bounced` aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Response {
    /// The message reached the customer.
    Delivered,
    /// The customer opened it.
    Opened,
    /// The customer clicked through.
    Clicked,
    /// The customer withdrew consent on the campaign's channel.
    Unsubscribed,
    /// The message could not be delivered.
    Bounced,
}

impl Response {
    /// Every response, in code order.
    pub const ALL: [Self; 5] = [Self::Delivered, Self::Opened, Self::Clicked, Self::Unsubscribed, Self::Bounced];

    /// The name used in events and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Opened => "opened",
            Self::Clicked => "clicked",
            Self::Unsubscribed => "unsubscribed",
            Self::Bounced => "bounced",
        }
    }

    /// The response named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The one-byte code of the log encoding.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The response of a log code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Whether the member engaged with the message (opened or clicked): a responder.
    pub fn engaged(self) -> bool {
        matches!(self, Self::Opened | Self::Clicked)
    }
}

/// A validated, normalised event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Idempotency key.
    pub event_id: EventId,
    /// Whose event.
    pub customer_id: CustomerId,
    /// When it happened (event time).
    pub timestamp: Timestamp,
    /// What happened.
    pub kind: EventKind,
}

/// Why an event was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not JSON, not UTF-8, or the wrong JSON shape.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Nested deeper than [`MAX_EVENT_DEPTH`].
    #[error("JSON nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A field is missing or invalid.
    #[error("{field}: {reason}")]
    Field {
        /// Path of the field, e.g. `items[2].price`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Several fields are wrong: every one, in the order of the event's checks.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<EventError>),
}

/// The errors of one event, gathered so that all are reported at once.
#[derive(Default)]
struct Collected(Vec<EventError>);

impl Collected {
    /// The value, or `None` with its error kept.
    fn keep<T>(&mut self, result: Result<T, EventError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(EventError::Several(errors)) => {
                self.0.extend(errors);
                None
            }
            Err(error) => {
                self.0.push(error);
                None
            }
        }
    }

    /// No error, one, or [`EventError::Several`].
    fn into_error(mut self) -> Option<EventError> {
        match self.0.len() {
            0 => None,
            1 => self.0.pop(),
            _ => Some(EventError::Several(self.0)),
        }
    }
}

impl EventError {
    fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Field { field: field.into(), reason: reason.into() }
    }

    /// The same error about a field of `items[index]`.
    fn in_item(self, index: usize) -> Self {
        match self {
            Self::Field { field, reason } => Self::Field { field: format!("items[{index}].{field}"), reason },
            other => other,
        }
    }

    /// The offending field, if the error is about one (the first, of several).
    pub fn field_name(&self) -> Option<&str> {
        match self {
            Self::Field { field, .. } => Some(field),
            Self::Several(errors) => errors.first().and_then(Self::field_name),
            _ => None,
        }
    }
}

/// A JSON string or number. Integers are kept as integers (timestamps and
/// quantities need no formatting round trip); other numbers are kept as the
/// shortest text that reads back as the same f64, so amounts stay exact.
#[derive(Debug, PartialEq)]
pub(crate) struct Scalar<'a> {
    pub(crate) text: Cow<'a, str>,
    pub(crate) is_string: bool,
    pub(crate) int: Option<i128>,
}

impl Scalar<'_> {
    fn text(&self) -> Cow<'_, str> {
        match self.int {
            Some(i) => Cow::Owned(i.to_string()),
            None => Cow::Borrowed(self.text.as_ref()),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar { text: Cow::Borrowed(v), is_string: true, int: None })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar { text: Cow::Owned(v.to_owned()), is_string: true, int: None })
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar { text: Cow::Owned(v), is_string: true, int: None })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar { text: Cow::Borrowed(""), is_string: false, int: Some(i128::from(v)) })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar { text: Cow::Borrowed(""), is_string: false, int: Some(i128::from(v)) })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                // Rust prints the shortest text that reads back as the same f64,
                // which is the decimal the sender wrote for any sane amount.
                Ok(Scalar { text: Cow::Owned(format!("{v}")), is_string: false, int: None })
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// An event as read, before validation (by [`crate::event_scan`] or serde_json).
///
/// Each accepted spelling of a field has a slot of its own, so valid JSON
/// that sends two of them (Segment sends `product_id` and `sku`) is never
/// refused: the canonical spelling wins, then the others in the order the
/// accessors list them ([`Self::customer`], [`RawItem::product`], …).
#[derive(Debug, Deserialize, PartialEq)]
pub(crate) struct RawEvent<'a> {
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) event_id: Option<Scalar<'a>>,
    #[serde(borrow, rename = "eventId")]
    pub(crate) event_id_camel: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) customer_id: Option<Scalar<'a>>,
    #[serde(borrow, rename = "customerId")]
    pub(crate) customer_id_camel: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) user_id: Option<Scalar<'a>>,
    #[serde(borrow, rename = "userId")]
    pub(crate) user_id_camel: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) order_id: Option<Scalar<'a>>,
    #[serde(borrow, rename = "orderId")]
    pub(crate) order_id_camel: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) timestamp: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) currency: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) items: Option<BoundedItems<'a>>,
    #[serde(borrow)]
    pub(crate) products: Option<BoundedItems<'a>>,
    #[serde(borrow)]
    pub(crate) revenue: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) amount: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) channels: Option<std::collections::BTreeMap<Cow<'a, str>, RawConsent<'a>>>,
    #[serde(borrow)]
    pub(crate) email: Option<RawConsent<'a>>,
    #[serde(borrow)]
    pub(crate) sms: Option<RawConsent<'a>>,
    #[serde(borrow)]
    pub(crate) push: Option<RawConsent<'a>>,
    #[serde(borrow)]
    pub(crate) acquisition_cost: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) acquisition_channel: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) campaign_id: Option<Scalar<'a>>,
    #[serde(borrow, rename = "campaignId")]
    pub(crate) campaign_id_camel: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) response: Option<Scalar<'a>>,
}

/// One channel's consent as sent: a boolean, or a word (`granted`, `opted_out`…).
#[derive(Debug, PartialEq)]
pub(crate) enum RawConsent<'a> {
    Flag(bool),
    Word(Cow<'a, str>),
    /// A number, an array or an object: read (a purchase may carry an
    /// `email` object of its own), refused only where consent is expected.
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for RawConsent<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ConsentVisitor;
        impl<'de> Visitor<'de> for ConsentVisitor {
            type Value = RawConsent<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean or a consent word")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawConsent::Flag(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawConsent::Word(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawConsent::Word(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(RawConsent::Word(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(RawConsent::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(RawConsent::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(RawConsent::Other("a number"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(RawConsent::Other("an array"))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(RawConsent::Other("an object"))
            }
        }
        deserializer.deserialize_any(ConsentVisitor)
    }
}

/// The words read as consent given or refused (any case).
const CONSENT_YES: [&str; 6] = ["true", "yes", "granted", "opted_in", "opt_in", "subscribed"];
const CONSENT_NO: [&str; 7] = ["false", "no", "denied", "opted_out", "opt_out", "unsubscribed", "not_subscribed"];

impl RawConsent<'_> {
    /// The consent stated, or why the value is not one.
    fn given(&self, field: &str) -> Result<bool, EventError> {
        match self {
            Self::Flag(b) => Ok(*b),
            Self::Other(what) => {
                Err(EventError::field(field, format!("expected true, false or a consent word, got {what}")))
            }
            Self::Word(w) => {
                let word = w.trim().to_ascii_lowercase();
                if CONSENT_YES.contains(&word.as_str()) {
                    Ok(true)
                } else if CONSENT_NO.contains(&word.as_str()) {
                    Ok(false)
                } else {
                    Err(EventError::field(
                        field,
                        format!(
                            "{} is not a consent: send true or false, or one of {} / {}",
                            preview(w),
                            CONSENT_YES.join(", "),
                            CONSENT_NO.join(", ")
                        ),
                    ))
                }
            }
        }
    }
}

/// The first slot of `slots` that was sent (else the first, empty).
fn first_sent<T>(slots: [&Option<T>; N_SPELLINGS]) -> &Option<T> {
    slots.iter().copied().find(|s| s.is_some()).unwrap_or(slots[0])
}

/// Most spellings one field accepts.
const N_SPELLINGS: usize = 4;

impl<'a> RawEvent<'a> {
    /// `event_id`, else `eventId`.
    fn event(&self) -> &Option<Scalar<'a>> {
        first_sent([&self.event_id, &self.event_id_camel, &None, &None])
    }

    /// `customer_id`, else `customerId`, `user_id`, `userId`.
    fn customer(&self) -> &Option<Scalar<'a>> {
        first_sent([&self.customer_id, &self.customer_id_camel, &self.user_id, &self.user_id_camel])
    }

    /// `order_id`, else `orderId`.
    fn order(&self) -> &Option<Scalar<'a>> {
        first_sent([&self.order_id, &self.order_id_camel, &None, &None])
    }

    /// `items`, else `products`.
    fn lines(&self) -> &Option<BoundedItems<'a>> {
        first_sent([&self.items, &self.products, &None, &None])
    }

    /// `campaign_id`, else `campaignId`.
    fn campaign(&self) -> &Option<Scalar<'a>> {
        first_sent([&self.campaign_id, &self.campaign_id_camel, &None, &None])
    }
}

#[derive(Debug, Deserialize, PartialEq)]
pub(crate) struct RawItem<'a> {
    #[serde(borrow)]
    pub(crate) product_id: Option<Scalar<'a>>,
    #[serde(borrow, rename = "productId")]
    pub(crate) product_id_camel: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) item_id: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) sku: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) category: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) quantity: Option<Scalar<'a>>,
    #[serde(borrow)]
    pub(crate) price: Option<Scalar<'a>>,
}

impl<'a> RawItem<'a> {
    /// `product_id`, else `productId`, `item_id`, `sku`.
    fn product(&self) -> &Option<Scalar<'a>> {
        first_sent([&self.product_id, &self.product_id_camel, &self.item_id, &self.sku])
    }
}

/// The items of one purchase, refused while decoding once there are more than
/// [`MAX_ITEMS_PER_EVENT`], so a hostile body cannot make the decoder allocate
/// far more than it sent.
#[derive(Debug, PartialEq)]
pub(crate) struct BoundedItems<'a>(pub(crate) Vec<RawItem<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for BoundedItems<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ItemsVisitor<'a> {
            type Value = BoundedItems<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of at most {MAX_ITEMS_PER_EVENT} items")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(item) = seq.next_element::<RawItem<'a>>()? {
                    if items.len() == MAX_ITEMS_PER_EVENT {
                        return Err(de::Error::custom(format_args!(
                            "items: more than {MAX_ITEMS_PER_EVENT} items in one event (the limit)"
                        )));
                    }
                    items.push(item);
                }
                Ok(BoundedItems(items))
            }
        }
        deserializer.deserialize_seq(ItemsVisitor(std::marker::PhantomData))
    }
}

/// Longest JSON decoder message kept (serde quotes whole bad values).
const MAX_JSON_ERROR_BYTES: usize = 512;

fn json_error(e: serde_json::Error) -> EventError {
    EventError::Json(truncate_message(e.to_string(), MAX_JSON_ERROR_BYTES))
}

/// Checks the bounds every applied event must respect: amounts within
/// [`MAX_AMOUNT_MINOR`], quantities within [`MAX_QUANTITY`], at most
/// [`MAX_ITEMS_PER_EVENT`] items. The validator runs it on every new event and
/// recovery runs it on every logged one, so an event logged by an older
/// version that allowed more is quarantined instead of corrupting sums.
pub fn check_bounds(event: &Event) -> Result<(), EventError> {
    let amount = |value: i64, field: String| {
        if (0..=MAX_AMOUNT_MINOR).contains(&value) {
            Ok(())
        } else {
            Err(EventError::field(
                field,
                format!("{value} minor units is outside 0..={MAX_AMOUNT_MINOR} (the per-amount limit)"),
            ))
        }
    };
    match &event.kind {
        EventKind::Purchase(p) => {
            amount(p.revenue_minor, "revenue".into())?;
            if let Some(cost) = p.acquisition.as_ref().and_then(|a| a.cost_minor) {
                amount(cost, "acquisition_cost".into())?;
            }
            if p.items.len() > MAX_ITEMS_PER_EVENT {
                return Err(EventError::field(
                    "items",
                    format!("{} items, the limit is {MAX_ITEMS_PER_EVENT} per event", p.items.len()),
                ));
            }
            for (i, item) in p.items.iter().enumerate() {
                check_quantity(&item.quantity).map_err(|e| e.in_item(i))?;
                if let Some(price) = item.unit_price_minor {
                    amount(price, format!("items[{i}].price"))?;
                }
            }
            Ok(())
        }
        EventKind::Refund(r) => r.amount_minor.map_or(Ok(()), |a| amount(a, "amount".into())),
        EventKind::Consent(_) | EventKind::CampaignResponse(_) => Ok(()),
        EventKind::Customer(a) => a.cost_minor.map_or(Ok(()), |c| amount(c, "acquisition_cost".into())),
    }
}

fn check_quantity(quantity: &Decimal) -> Result<(), EventError> {
    if quantity.is_negative() || quantity.is_zero() {
        return Err(EventError::field("quantity", "must be positive"));
    }
    if quantity.mantissa > MAX_QUANTITY.saturating_mul(10i128.saturating_pow(quantity.scale)) {
        return Err(EventError::field(
            "quantity",
            format!("{} is more than {MAX_QUANTITY} units (the per-line limit)", quantity.to_text()),
        ));
    }
    Ok(())
}

/// Rejects JSON nested deeper than `limit` (arrays and objects, outside strings).
pub fn check_depth(json: &[u8], limit: usize) -> Result<(), EventError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return Err(EventError::TooDeep { limit });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Field names that carry the customer id (the contract name and its aliases).
pub(crate) const CUSTOMER_ID_FIELDS: [&str; 4] = ["customer_id", "userId", "user_id", "customerId"];

/// Every customer id an event names, read with the same field names as
/// [`Validator::decode`] and with JSON escapes decoded, even when the rest of
/// the event is invalid or names a customer twice. Erasure uses it to find
/// rejected events of a customer however their id was spelled.
pub fn claimed_customer_ids(json: &[u8]) -> Vec<String> {
    // The visitor pushes into `ids` as it goes, so the ids named before a
    // syntax error are kept too.
    struct Claims<'v>(&'v mut Vec<String>);
    impl<'de> Visitor<'de> for Claims<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if CUSTOMER_ID_FIELDS.contains(&key.as_ref()) {
                    let id = map.next_value::<Scalar<'de>>()?;
                    self.0.push(id.text().into_owned());
                } else {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    let mut ids = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let _ = de::Deserializer::deserialize_map(&mut deserializer, Claims(&mut ids));
    ids
}

/// Validation rules that depend on configuration and the clock.
#[derive(Clone, Debug)]
pub struct Validator {
    /// Base currency and rates.
    pub currencies: CurrencyTable,
    /// "Now" for the future-timestamp rule (the server clock).
    pub now: Timestamp,
    /// How far ahead of `now` a timestamp may be (default one day).
    pub max_ahead_ms: i64,
}

impl Validator {
    /// Rules with the given currencies and the current wall clock.
    pub fn new(currencies: CurrencyTable) -> Self {
        Self { currencies, now: Timestamp::now(), max_ahead_ms: MS_PER_DAY }
    }

    /// Decodes and validates one JSON event.
    /// The common shape is read in one pass (module `event_scan`); anything
    /// else, errors included, goes through serde_json with the same result.
    pub fn decode(&self, json: &[u8]) -> Result<Event, EventError> {
        match std::str::from_utf8(json) {
            Ok(text) => self.decode_text(text),
            // serde_json names the invalid byte.
            Err(_) => self.decode_general(json),
        }
    }

    /// [`Validator::decode`] of text already checked for UTF-8 (a body is
    /// checked once, then read line by line).
    pub fn decode_text(&self, json: &str) -> Result<Event, EventError> {
        let raw = match crate::event_scan::scan_event(json) {
            Some(raw) => raw,
            None => {
                check_depth(json.as_bytes(), MAX_EVENT_DEPTH)?;
                serde_json::from_str(json).map_err(json_error)?
            }
        };
        self.validated(raw)
    }

    /// [`Validator::decode`] with the general decoder only (serde_json), for
    /// comparisons: the same events and errors, without the one-pass reader.
    pub fn decode_general(&self, json: &[u8]) -> Result<Event, EventError> {
        self.validated(Self::read_general(json)?)
    }

    fn read_general(json: &[u8]) -> Result<RawEvent<'_>, EventError> {
        check_depth(json, MAX_EVENT_DEPTH)?;
        serde_json::from_slice(json).map_err(json_error)
    }

    fn validated(&self, raw: RawEvent<'_>) -> Result<Event, EventError> {
        let event = self.validate(raw)?;
        check_bounds(&event)?;
        Ok(event)
    }

    fn validate(&self, raw: RawEvent<'_>) -> Result<Event, EventError> {
        // Every field is checked, and every error reported at once; what
        // depends on a field in error (amounts on an unknown currency, the
        // body on a missing type) is checked once that field is right.
        let mut errors = Collected::default();
        let kind_cow = errors.keep(required(&raw.kind, "type"));
        let kind_text: &str = kind_cow.as_deref().unwrap_or("");
        let customer_id = errors.keep(id(raw.customer(), "customer_id", CustomerId::new));
        let order_id_text = raw.order().as_ref().map(Scalar::text);
        let order_id = order_id_text.as_deref();
        let order_ok = order_id.is_none_or(|order| errors.keep(check_id_text(order, "order_id")).is_some());
        let event_id = errors.keep(match (raw.event(), order_id, kind_text) {
            (None, Some(order), "purchase") => EventId::new(order).map_err(|r| EventError::field("order_id", r)),
            _ => id(raw.event(), "event_id", EventId::new),
        });
        let timestamp = errors.keep(self.timestamp(&raw.timestamp));
        let currency = errors.keep(self.currency(&raw));
        let kind = match (&kind_cow, currency) {
            (Some(_), Some(currency)) if order_ok => {
                errors.keep(self.body(&raw, kind_text, currency, order_id, event_id.as_ref().map(EventId::as_str)))
            }
            _ => None,
        };
        match (errors.into_error(), customer_id, event_id, timestamp, kind) {
            (None, Some(customer_id), Some(event_id), Some(timestamp), Some(kind)) => {
                Ok(Event { event_id, customer_id, timestamp, kind })
            }
            (Some(error), ..) => Err(error),
            // Every missing part pushed its error: not reached.
            (None, ..) => Err(EventError::field("type", "missing")),
        }
    }

    /// The currency of an event's amounts: the base unless it says, and one
    /// with a rate to the base.
    fn currency(&self, raw: &RawEvent<'_>) -> Result<Currency, EventError> {
        let currency = match &raw.currency {
            None => self.currencies.base,
            Some(s) => Currency::from_code(&s.text()).ok_or_else(|| {
                EventError::field("currency", format!("{} is not an ISO 4217 code Patron knows", preview(&s.text())))
            })?,
        };
        if currency != self.currencies.base && !self.currencies.rates.contains_key(&currency) {
            return Err(EventError::field(
                "currency",
                format!(
                    "no exchange rate from {currency} to the base currency {}; add one to [currency.rates] in patron.toml",
                    self.currencies.base
                ),
            ));
        }
        Ok(currency)
    }

    /// What an event of type `kind_text` says, its amounts in `currency`.
    fn body(
        &self,
        raw: &RawEvent<'_>,
        kind_text: &str,
        currency: Currency,
        order_id: Option<&str>,
        event_id: Option<&str>,
    ) -> Result<EventKind, EventError> {
        let to_base = |amount: &Decimal, field: &str| {
            self.currencies.to_base_minor(amount, currency).map_err(|r| EventError::field(field, r))
        };
        let acquisition = Self::acquisition(raw, &to_base)?;
        if acquisition.is_some() && !matches!(kind_text, "purchase" | "customer") {
            let field = if raw.acquisition_cost.is_some() { "acquisition_cost" } else { "acquisition_channel" };
            return Err(EventError::field(
                field,
                format!("only a purchase or a customer event states an acquisition, not a {}", preview(kind_text)),
            ));
        }
        Ok(match kind_text {
            "purchase" => {
                let mut items = Vec::new();
                let mut line_total_sum: Option<i64> = Some(0);
                let mut item_errors = Collected::default();
                for (i, item) in raw.lines().iter().flat_map(|items| &items.0).enumerate() {
                    // Field names get their `items[i].` prefix only when there is an error.
                    let Some((item, line_total)) =
                        item_errors.keep(Self::line_item(item, &to_base).map_err(|e| e.in_item(i)))
                    else {
                        continue;
                    };
                    line_total_sum = match (line_total_sum, line_total) {
                        (Some(sum), Some(t)) => Some(sum.checked_add(t).filter(|s| *s <= MAX_AMOUNT_MINOR).ok_or_else(
                            || {
                                EventError::field(
                                    "revenue",
                                    format!(
                                        "the sum of the line totals is over {MAX_AMOUNT_MINOR} minor units (the per-amount limit)"
                                    ),
                                )
                            },
                        )?),
                        _ => None,
                    };
                    items.push(item);
                }
                if let Some(error) = item_errors.into_error() {
                    return Err(error);
                }
                let revenue_minor = match (&raw.revenue, line_total_sum) {
                    (Some(r), _) => to_base(&non_negative(r, "revenue")?, "revenue")?,
                    (None, Some(sum)) if !items.is_empty() => sum,
                    (None, _) if items.is_empty() => {
                        return Err(EventError::field("revenue", "missing, and there are no items to sum"));
                    }
                    (None, _) => {
                        return Err(EventError::field("revenue", "missing, and not every item has a price to sum"));
                    }
                };
                EventKind::Purchase(Purchase {
                    order_id: order_id.filter(|o| Some(*o) != event_id).map(Into::into),
                    items,
                    revenue_minor,
                    acquisition,
                })
            }
            "refund" => {
                let amount = match (&raw.amount, &raw.revenue) {
                    (Some(a), _) => non_negative(a, "amount")?,
                    (None, Some(r)) => non_negative(r, "revenue")?,
                    (None, None) if order_id.is_some() => {
                        return Ok(EventKind::Refund(Refund {
                            order_id: order_id.map(Into::into),
                            amount_minor: None,
                        }));
                    }
                    (None, None) => {
                        return Err(EventError::field(
                            "amount",
                            "missing (without an amount, a refund refunds what remains of its order, so it needs order_id)",
                        ));
                    }
                };
                if amount.is_zero() {
                    return Err(EventError::field("amount", "must be positive"));
                }
                let amount_minor = to_base(&amount, "amount")?;
                if amount_minor == 0 {
                    return Err(EventError::field(
                        "amount",
                        format!("{} rounds to 0 minor units of {}", amount.to_text(), self.currencies.base),
                    ));
                }
                EventKind::Refund(Refund { order_id: order_id.map(Into::into), amount_minor: Some(amount_minor) })
            }
            "consent" => EventKind::Consent(Self::consent(raw)?),
            "customer" => EventKind::Customer(acquisition.ok_or_else(|| {
                EventError::field(
                    "acquisition_cost",
                    "missing: a customer event states acquisition_cost, acquisition_channel or both",
                )
            })?),
            "campaign_response" => {
                let campaign_id = required(raw.campaign(), "campaign_id")?;
                if campaign_id.trim().is_empty() {
                    return Err(EventError::field("campaign_id", "is empty"));
                }
                check_id_text(&campaign_id, "campaign_id")?;
                let response_text = required(&raw.response, "response")?;
                let response = Response::parse(&response_text).ok_or_else(|| {
                    EventError::field(
                        "response",
                        format!(
                            "{} is not one of delivered, opened, clicked, unsubscribed, bounced",
                            preview(&response_text)
                        ),
                    )
                })?;
                EventKind::CampaignResponse(CampaignResponse { campaign_id: campaign_id.as_ref().into(), response })
            }
            other => {
                // Segment's call types: the sender most likely forgot ?source=segment.
                let hint = if ["track", "identify", "page", "screen", "group", "alias"].contains(&other) {
                    "; a Segment call? send it with ?source=segment"
                } else {
                    ""
                };
                return Err(EventError::field(
                    "type",
                    format!(
                        "unknown event type {} (expected purchase, refund, consent, customer or campaign_response{hint})",
                        preview(other)
                    ),
                ));
            }
        })
    }

    /// The consent a `consent` event states, nested under `channels` or
    /// flat (`"email": false`), as booleans or words; a flat field and the
    /// same channel under `channels` must agree.
    fn consent(raw: &RawEvent<'_>) -> Result<ConsentChange, EventError> {
        let mut errors = Collected::default();
        let mut consent = Consent::default();
        let mut other: Vec<ChannelConsent> = Vec::new();
        let mut stated = false;
        for (name, value) in raw.channels.iter().flatten() {
            let field = format!("channels.{name}");
            let slot = match name.as_ref() {
                "email" => &mut consent.email,
                "sms" => &mut consent.sms,
                "push" => &mut consent.push,
                name => {
                    let channel = name.to_ascii_lowercase();
                    let well_formed = !channel.is_empty()
                        && channel.len() <= MAX_CHANNEL_NAME
                        && channel.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if !well_formed {
                        errors.keep::<()>(Err(EventError::field(
                            field,
                            format!(
                                "a channel name is 1 to {MAX_CHANNEL_NAME} letters, digits, '_' or '-', got {}",
                                preview(name)
                            ),
                        )));
                    } else if ["email", "sms", "push"].contains(&channel.as_str()) {
                        errors.keep::<()>(Err(EventError::field(field, format!("write it as {channel:?}"))));
                    } else if other.iter().any(|o| *o.channel == *channel) {
                        errors.keep::<()>(Err(EventError::field(field, "the same channel twice")));
                    } else if let Some(given) = errors.keep(value.given(&field)) {
                        other.push(ChannelConsent { channel: channel.into(), given });
                    }
                    stated = true;
                    continue;
                }
            };
            *slot = errors.keep(value.given(&field));
            stated = true;
        }
        if other.len() > MAX_OTHER_CHANNELS {
            errors.keep::<()>(Err(EventError::field(
                "channels",
                format!("{} channels beyond email, sms and push; at most {MAX_OTHER_CHANNELS}", other.len()),
            )));
        }
        for (name, flat, slot) in [
            ("email", &raw.email, &mut consent.email),
            ("sms", &raw.sms, &mut consent.sms),
            ("push", &raw.push, &mut consent.push),
        ] {
            let Some(value) = flat else { continue };
            stated = true;
            match (errors.keep(value.given(name)), *slot) {
                (Some(given), Some(nested)) if given != nested => {
                    errors.keep::<()>(Err(EventError::field(
                        name,
                        format!("says {given} but channels.{name} says {nested}"),
                    )));
                }
                (given @ Some(_), _) => *slot = given,
                (None, _) => {}
            }
        }
        if let Some(error) = errors.into_error() {
            return Err(error);
        }
        if !stated || (consent == Consent::default() && other.is_empty()) {
            return Err(EventError::field(
                "channels",
                "missing: name at least one channel (email, sms, push or another)",
            ));
        }
        other.sort_by(|a, b| a.channel.cmp(&b.channel));
        Ok(ConsentChange { channels: consent, other })
    }

    /// The acquisition an event states, if any: its cost in base minor units
    /// (converted like every amount) and its channel.
    fn acquisition(
        raw: &RawEvent<'_>,
        to_base: &impl Fn(&Decimal, &str) -> Result<i64, EventError>,
    ) -> Result<Option<Acquisition>, EventError> {
        let cost_minor = match &raw.acquisition_cost {
            None => None,
            Some(c) => Some(to_base(&non_negative(c, "acquisition_cost")?, "acquisition_cost")?),
        };
        let channel = match &raw.acquisition_channel {
            None => None,
            Some(c) => {
                let text = c.text();
                let name = text.trim();
                if name.is_empty() {
                    return Err(EventError::field("acquisition_channel", "is empty"));
                }
                if name.len() > MAX_CHANNEL_BYTES {
                    return Err(EventError::field(
                        "acquisition_channel",
                        format!("is {} bytes long, the limit is {MAX_CHANNEL_BYTES}", name.len()),
                    ));
                }
                check_id_text(name, "acquisition_channel")?;
                Some(name.into())
            }
        };
        Ok((cost_minor.is_some() || channel.is_some()).then_some(Acquisition { cost_minor, channel }))
    }

    /// One line of a purchase and its total in base minor units (if priced).
    fn line_item(
        item: &RawItem<'_>,
        to_base: &impl Fn(&Decimal, &str) -> Result<i64, EventError>,
    ) -> Result<(LineItem, Option<i64>), EventError> {
        let product_id = id(item.product(), "product_id", ProductId::new)?;
        let category = match &item.category {
            Some(c) if !c.text().trim().is_empty() => {
                check_id_text(&c.text(), "category")?;
                Some(c.text().as_ref().into())
            }
            _ => None,
        };
        let quantity = match &item.quantity {
            None => Decimal { mantissa: 1, scale: 0 },
            Some(q) => non_negative(q, "quantity")?,
        };
        if quantity.is_zero() {
            return Err(EventError::field("quantity", "must not be 0"));
        }
        check_quantity(&quantity)?;
        let (unit_price_minor, line_total) = match &item.price {
            None => (None, None),
            Some(p) => {
                let price = non_negative(p, "price")?;
                let unit_price = to_base(&price, "price")?;
                let total = price.checked_mul(&quantity).ok_or_else(|| {
                    EventError::field("price", "price × quantity has too many digits to compute exactly")
                })?;
                let line_total = to_base(&total, "price").ok().filter(|t| *t <= MAX_AMOUNT_MINOR).ok_or_else(|| {
                    EventError::field(
                        "price",
                        format!(
                            "price × quantity ({} × {}) is over {MAX_AMOUNT_MINOR} minor units (the per-amount limit)",
                            price.to_text(),
                            quantity.to_text()
                        ),
                    )
                })?;
                (Some(unit_price), Some(line_total))
            }
        };
        Ok((LineItem { product_id, category, quantity, unit_price_minor }, line_total))
    }

    fn timestamp(&self, raw: &Option<Scalar<'_>>) -> Result<Timestamp, EventError> {
        let s = raw.as_ref().ok_or_else(|| EventError::field("timestamp", "missing"))?;
        let parsed = if s.is_string {
            Timestamp::parse_rfc3339(&s.text)
                .ok_or_else(|| EventError::field("timestamp", format!("{} is not RFC 3339", preview(&s.text))))?
        } else {
            // `1.7e12` is a JSON float but a whole number of milliseconds.
            let whole = s.int.and_then(|i| i64::try_from(i).ok()).or_else(|| {
                s.text.parse::<f64>().ok().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)
            });
            Timestamp::from_millis(whole.ok_or_else(|| {
                EventError::field(
                    "timestamp",
                    format!("{} is not a whole number of epoch milliseconds", preview(&s.text())),
                )
            })?)
        };
        if parsed.millis() < EARLIEST_MS {
            return Err(EventError::field("timestamp", format!("{parsed} is before 1990-01-01")));
        }
        if parsed.millis() > self.now.millis().saturating_add(self.max_ahead_ms) {
            return Err(EventError::field(
                "timestamp",
                format!(
                    "{parsed} is more than {} h ahead of the server clock ({})",
                    self.max_ahead_ms / 3_600_000,
                    self.now
                ),
            ));
        }
        Ok(parsed)
    }
}

fn required<'s>(raw: &'s Option<Scalar<'_>>, field: &str) -> Result<Cow<'s, str>, EventError> {
    raw.as_ref().map(Scalar::text).ok_or_else(|| EventError::field(field, "missing"))
}

fn check_id_text(text: &str, field: &str) -> Result<(), EventError> {
    if text.len() > MAX_ID_BYTES {
        return Err(EventError::field(field, format!("is {} bytes long, the limit is {MAX_ID_BYTES}", text.len())));
    }
    // Printable ASCII, the usual case, is checked a block of bytes at a time.
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(EventError::field(
            field,
            format!("contains the control character U+{:04X}; ids are printable text", u32::from(c)),
        ));
    }
    Ok(())
}

fn id<T>(raw: &Option<Scalar<'_>>, field: &str, make: impl Fn(&str) -> Result<T, String>) -> Result<T, EventError> {
    let text = required(raw, field)?;
    let made = make(&text).map_err(|r| EventError::field(field, r))?;
    check_id_text(&text, field)?;
    Ok(made)
}

fn non_negative(raw: &Scalar<'_>, field: &str) -> Result<Decimal, EventError> {
    let d = match raw.int {
        Some(mantissa) => Decimal { mantissa, scale: 0 },
        None => Decimal::parse(&raw.text).map_err(|e| EventError::field(field, e.to_string()))?,
    };
    if d.is_negative() {
        return Err(EventError::field(field, format!("must not be negative, got {}", preview(&raw.text()))));
    }
    Ok(d)
}

fn decimal_text(d: &Decimal) -> String {
    d.to_text()
}

fn minor_text(minor: i64, currency: Currency) -> String {
    decimal_text(&Decimal { mantissa: i128::from(minor), scale: currency.exponent() })
}

impl Event {
    /// The event in wire form, amounts in `base` (the currency it was normalised to).
    pub fn to_json(&self, base: Currency) -> Value {
        let mut v = json!({
            "event_id": self.event_id.as_str(),
            "customer_id": self.customer_id.as_str(),
            "timestamp": self.timestamp.to_rfc3339(),
        });
        let obj = v.as_object_mut().expect("json! object");
        match &self.kind {
            EventKind::Purchase(p) => {
                obj.insert("type".into(), "purchase".into());
                obj.insert("currency".into(), base.code().into());
                obj.insert("revenue".into(), minor_text(p.revenue_minor, base).into());
                if let Some(order) = &p.order_id {
                    obj.insert("order_id".into(), order.as_ref().into());
                }
                let items: Vec<Value> = p
                    .items
                    .iter()
                    .map(|i| {
                        let mut item =
                            json!({"product_id": i.product_id.as_str(), "quantity": decimal_text(&i.quantity)});
                        let m = item.as_object_mut().expect("json! object");
                        if let Some(c) = &i.category {
                            m.insert("category".into(), c.as_ref().into());
                        }
                        if let Some(price) = i.unit_price_minor {
                            m.insert("price".into(), minor_text(price, base).into());
                        }
                        item
                    })
                    .collect();
                obj.insert("items".into(), items.into());
                if let Some(acquisition) = &p.acquisition {
                    acquisition_json(obj, acquisition, base);
                }
            }
            EventKind::Refund(r) => {
                obj.insert("type".into(), "refund".into());
                obj.insert("currency".into(), base.code().into());
                if let Some(amount) = r.amount_minor {
                    obj.insert("amount".into(), minor_text(amount, base).into());
                }
                if let Some(order) = &r.order_id {
                    obj.insert("order_id".into(), order.as_ref().into());
                }
            }
            EventKind::Consent(change) => {
                obj.insert("type".into(), "consent".into());
                let mut channels = serde_json::Map::new();
                let c = &change.channels;
                for (name, value) in [("email", c.email), ("sms", c.sms), ("push", c.push)] {
                    if let Some(v) = value {
                        channels.insert(name.into(), v.into());
                    }
                }
                for o in &change.other {
                    channels.insert(o.channel.as_ref().into(), o.given.into());
                }
                obj.insert("channels".into(), channels.into());
            }
            EventKind::Customer(a) => {
                obj.insert("type".into(), "customer".into());
                acquisition_json(obj, a, base);
            }
            EventKind::CampaignResponse(r) => {
                obj.insert("type".into(), "campaign_response".into());
                obj.insert("campaign_id".into(), r.campaign_id.as_ref().into());
                obj.insert("response".into(), r.response.as_str().into());
            }
        }
        v
    }
}

fn acquisition_json(obj: &mut serde_json::Map<String, Value>, a: &Acquisition, base: Currency) {
    if let Some(cost) = a.cost_minor {
        obj.insert("currency".into(), base.code().into());
        obj.insert("acquisition_cost".into(), minor_text(cost, base).into());
    }
    if let Some(channel) = &a.channel {
        obj.insert("acquisition_channel".into(), channel.as_ref().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> Validator {
        Validator {
            now: Timestamp::parse_rfc3339("2026-11-23T12:00:00Z").unwrap(),
            ..Validator::new(CurrencyTable::default())
        }
    }

    fn decode(json: &str) -> Result<Event, EventError> {
        validator().decode(json.as_bytes())
    }

    fn field_of(json: &str) -> String {
        match decode(json) {
            Err(EventError::Field { field, .. }) => field,
            other => panic!("expected a field error for {json}, got {other:?}"),
        }
    }

    /// Issue 20: GA4's shape sent as is was refused three times in a row,
    /// one missing field per try. Every error of an event comes at once.
    #[test]
    fn regression_every_error_of_an_event_is_reported_at_once() {
        let err = decode(r#"{"type":"purchase","currency":"XYZ"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "customer_id: missing; event_id: missing; timestamp: missing; currency: \"XYZ\" is not an ISO 4217 code Patron knows"
        );
        assert_eq!(err.field_name(), Some("customer_id"));
        let items = r#"{"type":"purchase","event_id":"o","customer_id":"c","timestamp":"2026-11-23T10:15:00Z","items":[{"product_id":"","quantity":1},{"product_id":"p","quantity":0},{"product_id":"q","price":"-1"}]}"#;
        let err = decode(items).unwrap_err();
        let text = err.to_string();
        for field in ["items[0].product_id", "items[1].quantity", "items[2].price"] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        assert_eq!(decode(PURCHASE).map(|e| e.customer_id.as_str().to_owned()), Ok("c-42".to_owned()));
    }

    /// Issue 20: Segment sends `product_id` and `sku` together, and a
    /// tracker may send `customer_id` beside `userId`; valid JSON was refused
    /// as "duplicate field". The canonical spelling wins.
    #[test]
    fn regression_two_spellings_of_a_field_take_the_canonical_one_instead_of_refusing_valid_json() {
        let json = r#"{"type":"purchase","eventId":"e-2","event_id":"e-1","userId":"u-2","customer_id":"c-1","timestamp":"2026-11-23T10:15:00Z","products":[{"sku":"s-9","product_id":"p-1","price":"2"}],"items":[{"sku":"s-1","item_id":"i-1","price":"3"}]}"#;
        for event in [decode(json).unwrap(), validator().decode_general(json.as_bytes()).unwrap()] {
            assert_eq!((event.event_id.as_str(), event.customer_id.as_str()), ("e-1", "c-1"));
            let EventKind::Purchase(p) = &event.kind else { panic!("{event:?}") };
            assert_eq!(p.items.len(), 1, "items wins over products");
            assert_eq!(p.items[0].product_id.as_str(), "i-1", "item_id wins over sku");
        }
    }

    const PURCHASE: &str = r#"{"type":"purchase","event_id":"o-1001","customer_id":"c-42","timestamp":"2026-11-23T10:15:00Z",
        "currency":"EUR","items":[{"product_id":"sku-7","category":"shoes","quantity":1,"price":"59.90"}],"revenue":"59.90"}"#;

    #[test]
    fn design_examples_decode() {
        let e = decode(PURCHASE).unwrap();
        assert_eq!(e.customer_id.as_str(), "c-42");
        let EventKind::Purchase(p) = &e.kind else { panic!("purchase") };
        assert_eq!(p.revenue_minor, 5990);
        assert_eq!(p.items[0].unit_price_minor, Some(5990));
        let r = decode(r#"{"type":"refund","event_id":"r-77","customer_id":"c-42","order_id":"o-1001","timestamp":"2026-11-22T08:00:00Z","currency":"EUR","amount":"59.90"}"#).unwrap();
        assert!(matches!(r.kind, EventKind::Refund(Refund { amount_minor: Some(5990), .. })));
        // Without an amount, a refund takes what remains of the order it names.
        let whole = decode(r#"{"type":"refund","event_id":"r-2","customer_id":"c-42","order_id":"o-1","timestamp":"2026-11-23T08:00:00Z"}"#).unwrap();
        assert!(matches!(whole.kind, EventKind::Refund(Refund { amount_minor: None, .. })));
        let nothing =
            decode(r#"{"type":"refund","event_id":"r-3","customer_id":"c-42","timestamp":"2026-11-23T08:00:00Z"}"#);
        assert!(nothing.unwrap_err().to_string().starts_with("amount: missing (without an amount"));
        let k = decode(r#"{"type":"consent","event_id":"k-5","customer_id":"c-42","timestamp":"2026-11-23T10:16:00Z","channels":{"email":true,"sms":false,"push":false}}"#).unwrap();
        let channels = Consent { email: Some(true), sms: Some(false), push: Some(false) };
        assert_eq!(k.kind, EventKind::Consent(ConsentChange { channels, other: Vec::new() }));
    }

    /// The one-pass reader changes speed, not results: the general decoder
    /// gives the same event or the same error for every example here.
    #[test]
    fn the_general_decoder_agrees_with_decode() {
        let v = validator();
        for json in [
            PURCHASE,
            r#"{"type":"refund","eventId":"r-77","userId":42,"orderId":"o-1001","timestamp":1764000000000,"amount":"59.90"}"#,
            r#"{"type":"consent","event_id":"k-5","customer_id":"c-42","timestamp":"2026-11-23T10:16:00Z","channels":{"email":true}}"#,
            r#"{"type":"purchase","event_id":"o","customer_id":"c\u0041","timestamp":1764000000000,"revenue":12.5}"#,
            r#"{"type":"purchase","event_id":"o","customer_id":"c","timestamp":1764000000000,"items":[{"sku":"a","price":"-1"}]}"#,
            r#"{"type":"purchase","event_id":"o","customer_id":"c","timestamp":1764000000000,"revenue":"1","revenue":"2"}"#,
            r#"{"type":"visit","event_id":"o","customer_id":"c","timestamp":1764000000000}"#,
            r#"{"type":"purchase","#,
        ] {
            assert_eq!(v.decode(json.as_bytes()), v.decode_general(json.as_bytes()), "{json}");
            assert_eq!(v.decode_text(json), v.decode_general(json.as_bytes()), "{json}");
        }
    }

    #[test]
    fn tracker_aliases_are_accepted() {
        let e = decode(
            r#"{"type":"purchase","order_id":"o-9","userId":"u-1","timestamp":1795000000000,
            "products":[{"sku":"s-1","quantity":2,"price":1.25},{"item_id":"s-2","price":"0.10","quantity":3}]}"#,
        )
        .unwrap();
        assert_eq!(e.event_id.as_str(), "o-9");
        assert_eq!(e.customer_id.as_str(), "u-1");
        let EventKind::Purchase(p) = &e.kind else { panic!("purchase") };
        assert_eq!(p.revenue_minor, 250 + 30, "revenue defaults to the exact sum of quantity × price");
        assert_eq!(p.items[1].product_id.as_str(), "s-2");
    }

    #[test]
    fn every_rule_names_its_field() {
        let with = |k: &str, v: &str| {
            let mut obj: serde_json::Map<String, Value> = serde_json::from_str(PURCHASE).unwrap();
            obj.insert(k.into(), serde_json::from_str(v).unwrap());
            Value::Object(obj).to_string()
        };
        let without = |k: &str| {
            let mut obj: serde_json::Map<String, Value> = serde_json::from_str(PURCHASE).unwrap();
            obj.remove(k);
            Value::Object(obj).to_string()
        };
        let item = |v: &str| with("items", &format!("[{v}]"));
        assert_eq!(field_of(&without("customer_id")), "customer_id");
        assert_eq!(field_of(&with("customer_id", r#""  ""#)), "customer_id");
        assert_eq!(field_of(&with("event_id", &format!("\"{}\"", "x".repeat(257)))), "event_id");
        assert_eq!(field_of(&with("type", r#""visit""#)), "type");
        assert_eq!(field_of(&with("currency", r#""XYZ""#)), "currency");
        assert_eq!(field_of(&with("currency", r#""USD""#)), "currency", "no rate for USD in the default table");
        assert_eq!(field_of(&with("timestamp", r#""1989-12-31T23:59:59Z""#)), "timestamp");
        assert_eq!(field_of(&with("timestamp", r#""2026-11-25T12:00:01Z""#)), "timestamp");
        assert_eq!(field_of(&with("timestamp", r#""yesterday""#)), "timestamp");
        assert_eq!(field_of(&with("timestamp", "1.5")), "timestamp");
        assert_eq!(field_of(&with("revenue", r#""-1""#)), "revenue");
        assert_eq!(field_of(&with("revenue", r#""NaN""#)), "revenue");
        assert_eq!(field_of(&item(r#"{"product_id":"a","quantity":0,"price":"1"}"#)), "items[0].quantity");
        assert_eq!(field_of(&item(r#"{"product_id":"a","quantity":-2,"price":"1"}"#)), "items[0].quantity");
        assert_eq!(field_of(&item(r#"{"product_id":"a","quantity":1,"price":"-1"}"#)), "items[0].price");
        assert_eq!(field_of(&item(r#"{"product_id":"a","quantity":1,"price":"Infinity"}"#)), "items[0].price");
        assert_eq!(field_of(&item(r#"{"product_id":"","quantity":1,"price":"1"}"#)), "items[0].product_id");
        assert!(matches!(decode(&format!("{}{}", "[".repeat(20), "]".repeat(20))), Err(EventError::TooDeep { .. })));
        assert!(matches!(validator().decode(b"{\"type\":\"purchase\xff\"}"), Err(EventError::Json(_))));
        assert!(matches!(decode("{not json"), Err(EventError::Json(_))));
        assert_eq!(
            field_of(
                r#"{"type":"consent","event_id":"k","customer_id":"c","timestamp":1795000000000,"channels":{"fax":"maybe"}}"#
            ),
            "channels.fax"
        );
    }

    /// Issue 20: consent as people send it was refused: `"granted"` (a
    /// boolean was expected), a flat `email: false`, and another channel
    /// ("invalid JSON: unknown field", though the JSON was valid).
    #[test]
    fn regression_consent_words_the_flat_form_and_other_channels_are_read() {
        let consent = |body: &str| {
            decode(&format!(
                r#"{{"type":"consent","event_id":"k","customer_id":"c","timestamp":1795000000000,{body}}}"#
            ))
        };
        let change = |body: &str| match consent(body) {
            Ok(Event { kind: EventKind::Consent(c), .. }) => c,
            other => panic!("{body}: {other:?}"),
        };
        let kind = |body: &str| change(body).channels;
        assert_eq!(
            kind(r#""channels":{"email":"granted","sms":"Opted_Out"}"#),
            Consent { email: Some(true), sms: Some(false), push: None }
        );
        assert_eq!(
            kind(r#""email":false,"push":"subscribed""#),
            Consent { email: Some(false), sms: None, push: Some(true) }
        );
        assert_eq!(kind(r#""channels":{"email":true},"email":true"#).email, Some(true));
        let conflict = consent(r#""channels":{"email":true},"email":"denied""#).unwrap_err();
        assert_eq!(conflict.to_string(), "email: says false but channels.email says true");
        let word = consent(r#""channels":{"email":"maybe"}"#).unwrap_err();
        assert!(word.to_string().starts_with("channels.email: \"maybe\" is not a consent"), "{word}");
        // Issue 20: any channel name is kept, beside the three.
        let other = change(r#""channels":{"email":true,"WhatsApp":"opted_in","postal":false}"#);
        assert_eq!(other.channels, Consent { email: Some(true), sms: None, push: None });
        let named: Vec<(&str, bool)> = other.other.iter().map(|o| (o.channel.as_ref(), o.given)).collect();
        assert_eq!(named, vec![("postal", false), ("whatsapp", true)], "lowercase, in name order");
        assert_eq!(change(r#""channels":{"line":true}"#).other.len(), 1, "another channel alone is a consent");
        let bad = consent(r#""channels":{"what's app":true}"#).unwrap_err();
        assert!(bad.to_string().starts_with("channels.what's app: a channel name is 1 to 32"), "{bad}");
        let twice = consent(r#""channels":{"Fax":true,"fax":false}"#).unwrap_err();
        assert_eq!(twice.to_string(), "channels.fax: the same channel twice");
        let many: Vec<String> = (0..17).map(|i| format!(r#""c{i:02}":true"#)).collect();
        let too_many = consent(&format!(r#""channels":{{{}}}"#, many.join(","))).unwrap_err();
        assert_eq!(too_many.field_name(), Some("channels"));
        assert_eq!(consent(r#""channels":{}"#).unwrap_err().field_name(), Some("channels"));
        // Another event's own `email` object or text is not consent, and not an error there.
        let purchase = PURCHASE
            .replace(r#""revenue":"59.90""#, r#""revenue":"59.90","email":{"address":"a@b.c"},"sms":"+4912345""#);
        assert!(decode(&purchase).is_ok());
        let object = consent(r#""email":{"address":"a@b.c"}"#).unwrap_err();
        assert_eq!(object.to_string(), "email: expected true, false or a consent word, got an object");
    }

    #[test]
    fn acquisitions_are_read_from_purchases_and_customer_events() {
        let first = PURCHASE.replace(
            r#""revenue":"59.90""#,
            r#""revenue":"59.90","acquisition_cost":"12.50","acquisition_channel":"paid_search""#,
        );
        let EventKind::Purchase(p) = decode(&first).unwrap().kind else { panic!("purchase") };
        assert_eq!(p.acquisition, Some(Acquisition { cost_minor: Some(1250), channel: Some("paid_search".into()) }));
        let customer = r#"{"type":"customer","event_id":"cu-1","customer_id":"c-42","timestamp":"2026-11-23T10:00:00Z","acquisition_cost":4}"#;
        assert_eq!(
            decode(customer).unwrap().kind,
            EventKind::Customer(Acquisition { cost_minor: Some(400), channel: None })
        );
        let bare = r#"{"type":"customer","event_id":"cu-1","customer_id":"c-42","timestamp":"2026-11-23T10:00:00Z"}"#;
        assert_eq!(field_of(bare), "acquisition_cost");
        let negative = customer.replace(r#""acquisition_cost":4"#, r#""acquisition_cost":"-4""#);
        assert_eq!(field_of(&negative), "acquisition_cost");
        let huge = customer.replace(r#""acquisition_cost":4"#, r#""acquisition_cost":"2000000000000""#);
        assert_eq!(field_of(&huge), "acquisition_cost");
        let long = customer.replace(
            r#""acquisition_cost":4"#,
            &format!(r#""acquisition_channel":"{}""#, "x".repeat(MAX_CHANNEL_BYTES + 1)),
        );
        assert_eq!(field_of(&long), "acquisition_channel");
        let on_refund = r#"{"type":"refund","event_id":"r","customer_id":"c","timestamp":"2026-11-22T08:00:00Z","amount":"1","acquisition_cost":"3"}"#;
        assert_eq!(field_of(on_refund), "acquisition_cost");
        let v = validator();
        for json in [first.as_str(), customer, bare] {
            assert_eq!(v.decode(json.as_bytes()), v.decode_general(json.as_bytes()), "{json}");
        }
    }

    /// Issue 12: two purchases of 92233720368547758 summed past 64 bits and
    /// killed the shard; each amount is now bounded at validation.
    #[test]
    fn regression_amounts_that_sum_past_64_bits_are_refused_at_validation() {
        let with_revenue = |r: &str| PURCHASE.replace(r#""revenue":"59.90""#, &format!(r#""revenue":{r}"#));
        assert_eq!(field_of(&with_revenue(r#""92233720368547758""#)), "revenue");
        assert!(decode(&with_revenue(r#""1000000000000""#)).is_ok(), "one trillion euros is the largest amount");
        assert_eq!(field_of(&with_revenue(r#""1000000000000.01""#)), "revenue");
        let refund = r#"{"type":"refund","event_id":"r","customer_id":"c","timestamp":"2026-11-22T08:00:00Z","amount":"92233720368547758"}"#;
        assert_eq!(field_of(refund), "amount");
        // The line total is bounded too, and blamed on the price.
        let item = |q: &str, p: &str| {
            format!(
                r#"{{"type":"purchase","event_id":"o","customer_id":"c","timestamp":"2026-11-22T08:00:00Z","items":[{{"product_id":"a","quantity":{q},"price":"{p}"}}]}}"#
            )
        };
        assert_eq!(field_of(&item("1000000", "1000000000")), "items[0].price");
        // An oversized quantity is blamed on the quantity, not the price.
        assert_eq!(field_of(&item("9000000000000000000", "1")), "items[0].quantity");
        assert_eq!(field_of(&item("1000001", "1")), "items[0].quantity");
        assert!(decode(&item("1000000", "1")).is_ok());
        let many: Vec<String> = (0..2).map(|_| r#"{"product_id":"a","price":"600000000000"}"#.to_owned()).collect();
        let json = format!(
            r#"{{"type":"purchase","event_id":"o","customer_id":"c","timestamp":"2026-11-22T08:00:00Z","items":[{}]}}"#,
            many.join(",")
        );
        assert_eq!(field_of(&json), "revenue", "the sum of line totals is an amount too");
    }

    #[test]
    fn regression_items_beyond_the_limit_are_refused_while_decoding() {
        let with_items = |n: usize| {
            let items = vec![r#"{"product_id":"a"}"#; n].join(",");
            format!(
                r#"{{"type":"purchase","event_id":"o","customer_id":"c","timestamp":"2026-11-22T08:00:00Z","revenue":"1","items":[{items}]}}"#
            )
        };
        match decode(&with_items(MAX_ITEMS_PER_EVENT + 1)) {
            Err(EventError::Json(m)) => assert!(m.contains("more than 1000 items"), "{m}"),
            other => panic!("expected the items limit, got {other:?}"),
        }
        assert!(decode(&with_items(MAX_ITEMS_PER_EVENT)).is_ok());
    }

    #[test]
    fn regression_ids_with_control_characters_are_refused() {
        for bad in [r#""c\u0000x""#, r#""c\nx""#, r#""c\u007f""#] {
            let json = PURCHASE.replace(r#""c-42""#, bad);
            assert_eq!(field_of(&json), "customer_id", "{bad}");
        }
        assert_eq!(field_of(&PURCHASE.replace(r#""sku-7""#, r#""a\tb""#)), "items[0].product_id");
        assert!(decode(&PURCHASE.replace(r#""c-42""#, r#""Zoë Ünal""#)).is_ok(), "non-ASCII printable text is fine");
    }

    #[test]
    fn regression_a_timestamp_in_exponent_notation_is_a_whole_number() {
        let e = decode(&PURCHASE.replace(r#""2026-11-23T10:15:00Z""#, "1.7e12")).unwrap();
        assert_eq!(e.timestamp.millis(), 1_700_000_000_000);
        assert_eq!(field_of(&PURCHASE.replace(r#""2026-11-23T10:15:00Z""#, "1.7000000000005e12")), "timestamp");
    }

    #[test]
    fn regression_huge_bad_values_are_quoted_short() {
        let huge = "9".repeat(15 << 20);
        for json in [
            PURCHASE.replace(r#""revenue":"59.90""#, &format!(r#""revenue":"x{huge}""#)),
            PURCHASE.replace(r#""revenue":"59.90""#, &format!(r#""revenue":"-{huge}""#)),
            PURCHASE.replace(r#""2026-11-23T10:15:00Z""#, &format!(r#""{huge}""#)),
            PURCHASE.replace(r#""purchase""#, &format!(r#""{huge}""#)),
            PURCHASE.replace(r#""EUR""#, &format!(r#""{huge}""#)),
            PURCHASE.replace(r#""items":"#, &format!(r#""items":"{huge}","x":"#)),
        ] {
            let message = decode(&json).unwrap_err().to_string();
            assert!(message.len() < 1024, "{} bytes: {}", message.len(), &message[..200]);
        }
    }

    #[test]
    fn claimed_customer_ids_are_read_through_escapes_duplicates_and_invalid_fields() {
        let ids = |json: &[u8]| claimed_customer_ids(json);
        assert_eq!(ids(br#"{"customer_id":"plain\u0076ictim42","revenue":"x"}"#), ["plainvictim42"]);
        assert_eq!(ids(br#"{"userId":"a\"b","type":7}"#), ["a\"b"]);
        assert_eq!(ids(br#"{"customerId":42}"#), ["42"]);
        assert_eq!(ids(br#"{"customer_id":"x","user_id":"y","customer_id":"z"}"#), ["x", "y", "z"]);
        assert!(ids(b"{not json").is_empty());
        assert_eq!(ids(br#"{"customer_id":"v\u0069ctim","revenue":}"#), ["victim"], "kept before a syntax error");
    }

    #[test]
    fn decimal_text_is_exact() {
        assert_eq!(decimal_text(&Decimal { mantissa: 5, scale: 2 }), "0.05");
        assert_eq!(decimal_text(&Decimal { mantissa: -1234, scale: 2 }), "-12.34");
        assert_eq!(decimal_text(&Decimal { mantissa: 7, scale: 0 }), "7");
    }
}
