//! Events as backends already send them (`POST /v1/events?source=…`): each
//! source's example payloads (fixtures/sources/) are accepted as sent, and a
//! server fed them holds the same customers as one fed the same events in
//! Patron's native form.

use std::path::Path;

use patron_tests::{Server, fixture, post_json};
use serde_json::Value;

const CUSTOMER_COLUMNS: &str = "customer_id, orders, frequency, revenue, first_purchase_at, last_purchase_at, \
     consent_email, consent_sms, consent_push, round(clv, 6) AS clv";

fn server(dir: &Path, name: &str) -> Server {
    let config = dir.join("patron.toml");
    std::fs::write(&config, "[currency]\nbase = \"EUR\"\n[currency.rates]\nUSD = 0.92\nGBP = 1.17\n").unwrap();
    Server::start(&dir.join(name), &["--config", config.to_str().unwrap(), "--refit-interval", "3600"])
}

fn customers(server: &Server) -> String {
    ureq::post(&format!("{}/v1/sql", server.url))
        .set("Accept", "text/csv")
        .send_string(&format!("SELECT {CUSTOMER_COLUMNS} FROM customers ORDER BY customer_id"))
        .unwrap()
        .into_string()
        .unwrap()
}

fn post(server: &Server, query: &str, content_type: &str, body: &str) -> (u16, Value) {
    post_json(&format!("{}/v1/events{query}", server.url), content_type, body)
}

/// Posts `<source>.ndjson` with `?source=` and `<source>.native.ndjson`
/// natively; both servers must accept everything and hold the same customers.
fn same_customers_as_native(source: &str, ignored: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (from_source, native) = (server(dir.path(), "source"), server(dir.path(), "native"));
    let payload = std::fs::read_to_string(fixture(&format!("sources/{source}.ndjson"))).unwrap();
    let expected = std::fs::read_to_string(fixture(&format!("sources/{source}.native.ndjson"))).unwrap();
    let (status, body) = post(&from_source, &format!("?source={source}"), "application/x-ndjson", &payload);
    let events = expected.lines().count() as u64;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["accepted"].as_u64(), body["rejected_count"].as_u64()), (Some(events), Some(0)), "{body}");
    assert_eq!(body["ignored"].as_u64(), Some(ignored), "{body}");
    let (status, body) = post(&native, "", "application/x-ndjson", &expected);
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(events)), "{body}");
    let (a, b) = (customers(&from_source), customers(&native));
    assert!(a.lines().count() > 1, "{a}");
    assert_eq!(a, b, "{source}: the same customers as the native events");
}

#[test]
fn segment_order_completed_refunded_and_consent_as_sent() {
    same_customers_as_native("segment", 2);
}

#[test]
fn ga4_purchase_and_refund_as_sent() {
    same_customers_as_native("ga4", 1);
}

#[test]
fn shopify_order_and_customer_webhooks_as_sent() {
    same_customers_as_native("shopify", 0);
}

#[test]
fn snowplow_transaction_as_sent() {
    same_customers_as_native("snowplow", 2);
}

#[test]
fn a_pretty_printed_webhook_a_header_and_bad_records_get_specific_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "data");
    // A Shopify webhook arrives as one pretty-printed object; the header names the source.
    let order = std::fs::read_to_string(fixture("sources/shopify.ndjson")).unwrap();
    let first: Value = serde_json::from_str(order.lines().next().unwrap()).unwrap();
    let response = ureq::post(&format!("{}/v1/events", server.url))
        .set("Content-Type", "application/json")
        .set("X-Patron-Source", "shopify")
        .send_string(&serde_json::to_string_pretty(&first).unwrap())
        .unwrap();
    let body: Value = response.into_json().unwrap();
    assert_eq!(body["accepted"].as_u64(), Some(2), "the order and its consent: {body}");
    // A guest checkout and a record that is not JSON are refused at their index; the good one is kept.
    let guest = r#"{"id":991,"created_at":"2026-11-21T10:00:00Z","total_price":"5.00","line_items":[]}"#;
    let good = r#"{"id":992,"created_at":"2026-11-21T10:00:00Z","total_price":"5.00","currency":"USD","customer":{"id":77},"line_items":[]}"#;
    let (status, body) =
        post(&server, "?source=shopify", "application/x-ndjson", &format!("{guest}\nnot json\n{good}"));
    assert_eq!((status, body["accepted"].as_u64(), body["rejected_count"].as_u64()), (200, Some(1), Some(2)), "{body}");
    let errors: Vec<(u64, String)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["error"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(errors[0].0, 0);
    assert!(errors[0].1.starts_with("shopify customer.id: missing: a guest checkout"), "{errors:?}");
    assert_eq!(errors[1].0, 1);
    assert!(errors[1].1.starts_with("invalid JSON"), "{errors:?}");
    let (status, body) = post(&server, "?source=mixpanel", "application/json", "{}");
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("unknown_source")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("segment, ga4, shopify, snowplow"), "{body}");
}

/// `patron replay --source` reads a file of source records as the endpoint
/// does; `--source` on a CSV file is refused with the reason.
#[test]
fn replay_with_a_source_gives_the_customers_of_the_native_events() {
    let dir = tempfile::tempdir().unwrap();
    let (from_file, native) = (server(dir.path(), "file"), server(dir.path(), "native"));
    for (source, currency) in [("segment", "EUR"), ("shopify", "USD"), ("ga4", "GBP"), ("snowplow", "EUR")] {
        let input = fixture(&format!("sources/{source}.ndjson"));
        let output = patron_tests::patron(&[
            "replay",
            "--url",
            &from_file.url,
            "--input",
            input.to_str().unwrap(),
            "--source",
            source,
            "--currency",
            currency,
        ]);
        let text = patron_tests::transcript(&output);
        assert!(output.status.success() && text.contains(", 0 rejected by the server"), "{source}: {text}");
        let expected = std::fs::read_to_string(fixture(&format!("sources/{source}.native.ndjson"))).unwrap();
        let (status, body) = post(&native, "", "application/x-ndjson", &expected);
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(customers(&from_file), customers(&native));
    let csv = fixture("cdnow/cdnow_transactions.csv");
    let output =
        patron_tests::patron(&["replay", "--url", &from_file.url, "--input", csv.to_str().unwrap(), "--source", "ga4"]);
    assert!(!output.status.success());
    assert!(
        patron_tests::transcript(&output).contains("--source ga4 reads NDJSON records"),
        "{}",
        patron_tests::transcript(&output)
    );
}
