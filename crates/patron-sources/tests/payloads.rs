//! Each source's example payloads (fixtures/sources/) translate to exactly the
//! native events written beside them, ignore what is not e-commerce, and
//! refuse what cannot be attributed with the source's own field named.

use std::path::PathBuf;

use patron_sources::{Source, SourceError};
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<Value> {
    // Cargo's run-time value first: a binary built in another checkout that
    // shares the target directory would look for the fixtures there.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let path = manifest_dir.join("../../fixtures/sources").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every record of `<source>.ndjson` translated, and what was ignored.
fn translate(source: Source) -> (Vec<Value>, Vec<String>) {
    let (mut events, mut ignored) = (Vec::new(), Vec::new());
    for record in fixture(&format!("{}.ndjson", source.as_str())) {
        let t = source.translate(&record, Some(1_795_000_000_000)).unwrap();
        events.extend(t.events);
        ignored.extend(t.ignored);
    }
    (events, ignored)
}

#[test]
fn segment_order_completed_refunded_and_consent_become_native_events() {
    let (events, ignored) = translate(Source::Segment);
    assert_eq!(events, fixture("segment.native.ndjson"));
    assert_eq!(ignored, ["track \"Product Viewed\"", "page"]);
}

#[test]
fn ga4_purchase_and_refund_become_native_events() {
    let (events, ignored) = translate(Source::Ga4);
    assert_eq!(events, fixture("ga4.native.ndjson"));
    assert_eq!(ignored, ["page_view"]);
}

#[test]
fn shopify_order_and_customer_webhooks_become_a_purchase_and_consents() {
    let (events, ignored) = translate(Source::Shopify);
    assert_eq!(events, fixture("shopify.native.ndjson"));
    assert!(ignored.is_empty());
}

#[test]
fn snowplow_transaction_becomes_a_purchase_and_its_items_are_ignored() {
    let (events, ignored) = translate(Source::Snowplow);
    assert_eq!(events, fixture("snowplow.native.ndjson"));
    assert_eq!(ignored, ["transaction_item", "page_view"]);
}

#[test]
fn a_ga4_event_without_its_own_time_takes_the_requests_or_the_arrival() {
    let request = json!({"client_id":"c-1","events":[{"name":"purchase","params":{"transaction_id":"t-1","value":5}}]});
    let t = Source::Ga4.translate(&request, Some(1_795_000_000_000)).unwrap();
    assert_eq!(t.events[0]["timestamp"], 1_795_000_000_000i64);
    assert_eq!(t.events[0]["customer_id"], "c-1", "the device id when there is no user id");
    let err = Source::Ga4.translate(&request, None).unwrap_err();
    assert_eq!(err.to_string(), "events[0].timestamp_micros: missing", "a file has no arrival time");
}

#[test]
fn what_cannot_be_attributed_is_refused_naming_the_sources_field() {
    let cases: [(Source, Value, &str); 6] = [
        (
            Source::Segment,
            json!({"type":"track","event":"Order Completed","timestamp":"2026-11-20T10:00:00Z","properties":{"order_id":"o"}}),
            "userId: missing",
        ),
        (
            Source::Segment,
            json!({"type":"track","event":"Order Completed","userId":"u","properties":{"order_id":"o"}}),
            "timestamp: missing",
        ),
        (
            Source::Segment,
            json!({"type":"track","event":"Order Refunded","userId":"u","timestamp":"2026-11-20T10:00:00Z","properties":{"total":5}}),
            "properties.order_id: missing",
        ),
        (
            Source::Ga4,
            json!({"client_id":"c","events":[{"name":"purchase","params":{"value":3}}]}),
            "events[0].params.transaction_id: missing",
        ),
        (
            Source::Shopify,
            json!({"id":1,"created_at":"2026-11-20T10:00:00Z","line_items":[]}),
            "customer.id: missing: a guest checkout has no customer to score",
        ),
        (
            Source::Shopify,
            json!({"id":9,"order_id":1,"refund_line_items":[]}),
            "order_id: a Shopify refund names its order but not its customer",
        ),
    ];
    for (source, record, expected) in cases {
        let err: SourceError = source.translate(&record, Some(0)).unwrap_err();
        assert!(err.to_string().starts_with(expected), "{source:?}: {err}");
    }
}

/// GA4's and Segment's full refunds state no value: the native refund then
/// has no amount, and Patron refunds what remains of the order.
#[test]
fn a_full_refund_without_a_value_refunds_what_remains_of_its_order() {
    let ga4 = json!({"client_id":"c","user_id":"u","events":[{"name":"refund","timestamp_micros":1795000000000000i64,"params":{"transaction_id":"t-1"}}]});
    let translated = Source::Ga4.translate(&ga4, None).unwrap();
    assert_eq!(
        translated.events,
        vec![
            json!({"type":"refund","event_id":"t-1-refund-all","customer_id":"u","timestamp":1795000000000i64,"order_id":"t-1"})
        ]
    );
    let segment = json!({"type":"track","event":"Order Refunded","userId":"u","messageId":"m-1","timestamp":"2026-11-20T10:00:00Z","properties":{"order_id":"o-1"}});
    let translated = Source::Segment.translate(&segment, None).unwrap();
    assert_eq!(
        translated.events,
        vec![
            json!({"type":"refund","event_id":"m-1","customer_id":"u","timestamp":"2026-11-20T10:00:00Z","order_id":"o-1"})
        ]
    );
}
