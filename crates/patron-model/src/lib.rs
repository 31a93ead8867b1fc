//! Patron's shared vocabulary: events and their validation, ids, money, time,
//! the Arrow schemas of the contract tables, and the [`EventSink`] trait that
//! decouples ingestion from state.
//!
//! The main type is [`Event`], produced by [`Validator::decode`]:
//!
//! ```
//! use patron_model::{CurrencyTable, EventKind, Validator};
//! let validator = Validator::new(CurrencyTable::default());
//! let event = validator
//!     .decode(br#"{"type":"purchase","event_id":"o-1","customer_id":"c-42",
//!                  "timestamp":"2026-01-05T10:00:00Z","items":[{"sku":"s-7","quantity":2,"price":"9.95"}]}"#)
//!     .unwrap();
//! let EventKind::Purchase(order) = event.kind else { unreachable!() };
//! assert_eq!(order.revenue_minor, 1990); // exact, in base-currency cents
//! ```
#![deny(missing_docs)]

pub mod codec;
pub mod event;
mod event_scan;
pub mod money;
pub mod quote;
pub mod schema;
pub mod sink;
pub mod time;

pub use codec::{ByteReader, decode_event, encode_event};
pub use event::{
    Acquisition, CampaignResponse, ChannelConsent, Consent, ConsentChange, CustomerId, Event, EventError, EventId,
    EventKind, LineItem, MAX_AMOUNT_MINOR, MAX_CHANNEL_BYTES, MAX_CHANNEL_NAME, MAX_EVENT_DEPTH, MAX_ID_BYTES,
    MAX_ITEMS_PER_EVENT, MAX_OTHER_CHANNELS, MAX_QUANTITY, ProductId, Purchase, Refund, Response, Validator,
    check_bounds, check_depth, claimed_customer_ids,
};
pub use money::{Currency, CurrencyTable, Decimal, DecimalError, RateError};
pub use quote::{preview, truncate_message};
pub use schema::{
    CUSTOMERS_COLUMN_COMMENTS, customers_schema, products_schema, recommendations_schema, similar_products_schema,
};
pub use sink::{EventSink, Refused, SinkError, SubmitOutcome};
pub use time::{MS_PER_DAY, Timestamp};
