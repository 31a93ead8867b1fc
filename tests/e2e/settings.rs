//! `patron.toml`'s `[clv]` and `[currency]` sections (issue 18, live
//! configuration): a server converts events in every configured currency and
//! scores CLV with the configured margin, horizon and discount rate, exactly
//! as `patron score` does with the same file; bad settings stop it with an
//! error that names the key.

use std::collections::HashMap;

use patron_tests::{Server, cdnow_calibration, get_json, patron, post_json, run_score, transcript};
use serde_json::Value;

const SETTINGS: &str = r#"
[clv]
margin = 0.3
horizon_days = 180
annual_discount_rate = 0.05
retention_cost_per_year = 24

[currency]
base = "EUR"

[currency.rates]
USD = 0.92
"#;

/// The CDNOW calibration purchases, every other one in EUR instead of USD
/// (the same digits, so a different amount of money).
fn two_currency_events() -> Vec<String> {
    let (_, events) = cdnow_calibration();
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| if i % 2 == 0 { e } else { e.replace(r#""currency":"USD""#, r#""currency":"EUR""#) })
        .collect()
}

/// `clv`, `revenue` and `net_clv` of every customer in `customers.parquet`.
fn batch_values(path: &std::path::Path) -> HashMap<String, (f64, f64, f64)> {
    let batch = crate::batch_cdnow::read_parquet(path);
    let column = |name: &str| batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")).clone();
    let ids = column("customer_id");
    let ids = ids.as_any().downcast_ref::<arrow::array::StringArray>().expect("customer_id is a string column");
    let number = |name: &str| {
        column(name)
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .unwrap_or_else(|| panic!("{name} is a DOUBLE column"))
            .clone()
    };
    let (clv, revenue, net_clv) = (number("clv"), number("revenue"), number("net_clv"));
    (0..batch.num_rows())
        .map(|i| (ids.value(i).to_owned(), (clv.value(i), revenue.value(i), net_clv.value(i))))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[test]
fn served_clv_follows_the_clv_section_and_equals_patron_score_with_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("patron.toml");
    std::fs::write(&config, SETTINGS).unwrap();
    let config = config.to_str().unwrap();
    let events = two_currency_events();
    let events_path = dir.path().join("events.ndjson");
    std::fs::write(&events_path, events.join("\n")).unwrap();

    let server = Server::start(&dir.path().join("data"), &["--config", config, "--refit-interval", "3600"]);
    for chunk in events.chunks(1000) {
        let (status, body) = post_json(&format!("{}/v1/events", server.url), "application/x-ndjson", &chunk.join("\n"));
        assert_eq!((status, body["accepted"].as_u64()), (200, Some(chunk.len() as u64)), "{body}");
    }
    let (status, body) = post_json(&format!("{}/v1/admin/refit", server.url), "text/plain", "");
    assert_eq!(status, 200, "{body}");
    // A currency without a rate is still a named rejection.
    let gbp = events[0].replace(r#""currency":"USD""#, r#""currency":"GBP""#).replace("line-", "gbp-");
    let (status, body) = post_json(&format!("{}/v1/events", server.url), "application/x-ndjson", &gbp);
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(0)), "{body}");
    let reason = body["rejected"][0]["error"].as_str().unwrap_or_default();
    assert!(reason.contains("GBP") && reason.contains("[currency.rates]"), "{body}");

    let configured = dir.path().join("configured");
    run_score(&events_path, &configured, &["--config", config, "--top", "0"]);
    let batch = batch_values(&configured.join("customers.parquet"));
    let defaults = dir.path().join("defaults");
    let flags = ["--margin", "1", "--horizon-days", "365", "--retention-cost-per-year", "0"];
    run_score(&events_path, &defaults, &[&["--config", config, "--top", "0"][..], &flags].concat());
    let unconfigured = batch_values(&defaults.join("customers.parquet"));

    let sql = "SELECT customer_id, clv, revenue, net_clv FROM customers";
    let (status, rows) = post_json(&format!("{}/v1/sql", server.url), "text/plain", sql);
    assert_eq!(status, 200, "{rows}");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), batch.len());
    let (mut differs_from_defaults, mut disagreements) = (0, Vec::new());
    for row in rows {
        let id = row["customer_id"].as_str().unwrap();
        let (clv, revenue) = (row["clv"].as_f64().unwrap(), row["revenue"].as_f64().unwrap());
        let net_clv = row["net_clv"].as_f64().unwrap();
        let (batch_clv, batch_revenue, batch_net) = batch[id];
        if !close(clv, batch_clv) || !close(revenue, batch_revenue) || !close(net_clv, batch_net) {
            disagreements.push(format!(
                "{id}: served clv {clv} net {net_clv} revenue {revenue}, batch {batch_clv} {batch_net} {batch_revenue}"
            ));
        }
        // 24 a year over 180 days: six months of 30 days, 24 * 30 / 365 at the
        // end of each, discounted at 5% a year.
        let retention: f64 = (1..=6).map(|m| 24.0 * 30.0 / 365.0 / 1.05f64.powf(m as f64 / 12.0)).sum();
        if (clv - net_clv - retention).abs() > 1e-9 {
            disagreements.push(format!("{id}: clv {clv} - net_clv {net_clv} is not the retention cost {retention}"));
        }
        differs_from_defaults += usize::from(!close(clv, unconfigured[id].0));
        // Without a retention cost (and no acquisition costs) net_clv is the CLV.
        assert_eq!(unconfigured[id].2, unconfigured[id].0, "{id}");
    }
    assert!(disagreements.is_empty(), "{} disagree, first {:?}", disagreements.len(), &disagreements[..1]);
    // The settings matter: with margin 1 over 365 days every customer's CLV is another.
    assert_eq!(differs_from_defaults, rows.len());

    // Money is converted at the configured rate, event by event, to whole cents.
    let mut expected_cents = 0.0;
    for event in events.iter().map(|e| serde_json::from_str::<Value>(e).unwrap()).filter(|e| e["customer_id"] == "1") {
        let amount: f64 = event["revenue"].as_str().unwrap().parse().unwrap();
        let rate = if event["currency"] == "USD" { 0.92 } else { 1.0 };
        expected_cents += (amount * rate * 100.0).round_ties_even();
    }
    let (status, customer) = get_json(&format!("{}/v1/customers/1", server.url));
    assert_eq!(status, 200, "{customer}");
    assert!(close(customer["revenue"].as_f64().unwrap(), expected_cents / 100.0), "{customer} vs {expected_cents}");
    assert!(close(customer["clv"].as_f64().unwrap(), batch["1"].0), "{customer}");

    // Offline, `patron query --data-dir` reads the same file and gives the same CLV.
    server.kill_dash_nine();
    let data = dir.path().join("data");
    let sql = "SELECT customer_id, clv FROM customers";
    let offline = patron_tests::query_offline(&data, &["--config", config], "json", sql);
    assert!(offline.status.success(), "{}", transcript(&offline));
    let rows: Value = serde_json::from_slice(&offline.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), batch.len());
    let offline_disagreements =
        rows.iter().filter(|row| !close(row["clv"].as_f64().unwrap(), batch[row["customer_id"].as_str().unwrap()].0));
    assert_eq!(offline_disagreements.count(), 0, "offline CLV differs from patron score's with the same file");
}

#[test]
fn bad_settings_stop_the_server_with_the_key_that_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[clv]\nmargin = 1.5\n", "margin"),
        ("[clv]\nhorizon_days = 0\n", "horizon_days"),
        ("[clv]\nannual_discount_rate = -1\n", "annual_discount_rate"),
        ("[clv]\nretention_cost_per_year = -5\n", "retention_cost_per_year"),
        ("[clv]\nmargn = 0.3\n", "margn"),
        ("[currency]\nbase = \"EUR\"\n[currency.rates]\nUSD = -0.92\n", "USD"),
        ("[currency]\nbase = \"EUR\"\n[currency.rates]\nEUR = 1.0\n", "EUR"),
        ("[currency]\nbase = \"XYZ\"\n", "XYZ"),
    ];
    for (text, key) in cases {
        let config = dir.path().join("patron.toml");
        std::fs::write(&config, text).unwrap();
        let data = dir.path().join("data");
        let output = patron(&["serve", "--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
        let said = transcript(&output);
        assert!(!output.status.success(), "{text} was accepted: {said}");
        assert!(said.contains(key) && said.contains("patron.toml"), "{text}: {said}");
        assert!(!data.exists(), "{text}: a refused configuration created the data directory");
    }
    // The flag and the file must agree on the base currency.
    let config = dir.path().join("patron.toml");
    std::fs::write(&config, SETTINGS).unwrap();
    let output = patron(&["serve", "--config", config.to_str().unwrap(), "--currency", "USD"]);
    let said = transcript(&output);
    assert!(!output.status.success() && said.contains("--currency USD") && said.contains("EUR"), "{said}");
}

/// Issue 18, item 4: an acquisition cost and channel, stated on a first order
/// or on a `customer` event, in a configured currency, are converted like
/// every amount, survive a kill -9, and are subtracted in `net_clv`; SQL gives
/// CLV to acquisition cost by channel.
#[test]
fn acquisition_costs_are_converted_kept_across_a_crash_and_subtracted_from_net_clv() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("patron.toml");
    std::fs::write(&config, SETTINGS).unwrap();
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    let args = ["--config", config, "--refit-interval", "3600"];
    let events = [
        r#"{"type":"purchase","event_id":"a-1","customer_id":"won-by-search","timestamp":"2025-01-02T10:00:00Z","currency":"USD","revenue":"40","acquisition_cost":"25.00","acquisition_channel":"paid_search"}"#,
        r#"{"type":"purchase","event_id":"a-2","customer_id":"won-by-search","timestamp":"2025-02-02T10:00:00Z","currency":"EUR","revenue":"30"}"#,
        r#"{"type":"purchase","event_id":"a-3","customer_id":"referred","timestamp":"2025-01-05T10:00:00Z","currency":"EUR","revenue":"20"}"#,
        r#"{"type":"customer","event_id":"a-4","customer_id":"referred","timestamp":"2025-01-05T11:00:00Z","currency":"EUR","acquisition_cost":"4","acquisition_channel":"referral"}"#,
        r#"{"type":"purchase","event_id":"a-5","customer_id":"referred","timestamp":"2025-03-01T10:00:00Z","currency":"EUR","revenue":"25"}"#,
    ];
    let server = Server::start(&data, &args);
    let (status, body) = post_json(&format!("{}/v1/events", server.url), "application/x-ndjson", &events.join("\n"));
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(5)), "{body}");
    let wrong = r#"{"type":"refund","event_id":"a-6","customer_id":"referred","timestamp":"2025-03-02T10:00:00Z","amount":"1","acquisition_channel":"x"}"#;
    let (status, body) = post_json(&format!("{}/v1/events", server.url), "application/x-ndjson", wrong);
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(0)), "{body}");
    let reason = body["rejected"][0]["error"].as_str().unwrap_or_default();
    assert!(reason.starts_with("acquisition_channel: only a purchase or a customer event"), "{body}");

    let by_channel = "SELECT acquisition_channel, sum(acquisition_cost) AS cost, sum(clv) / sum(acquisition_cost) AS clv_to_cac, \
                      sum(clv - net_clv - acquisition_cost) AS retention FROM customers GROUP BY 1 ORDER BY 1";
    let query = |url: &str| {
        let (status, rows) = post_json(&format!("{url}/v1/sql"), "text/plain", by_channel);
        assert_eq!(status, 200, "{rows}");
        rows
    };
    let before = query(&server.url);
    let rows = before.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{before}");
    assert_eq!(rows[0]["acquisition_channel"], "paid_search");
    assert!((rows[0]["cost"].as_f64().unwrap() - 23.0).abs() < 1e-9, "25 USD at 0.92: {before}");
    assert_eq!(rows[1]["acquisition_channel"], "referral");
    assert!((rows[1]["cost"].as_f64().unwrap() - 4.0).abs() < 1e-9, "{before}");
    for row in rows {
        // net_clv = clv − retention cost over the horizon − acquisition cost.
        let retention = row["retention"].as_f64().unwrap();
        assert!(retention > 0.0 && retention < 24.0 * 180.0 / 365.0, "{row}");
    }
    let (status, customer) = get_json(&format!("{}/v1/customers/referred", server.url));
    assert_eq!(status, 200, "{customer}");
    assert_eq!(
        (customer["acquisition_cost"].as_f64(), customer["acquisition_channel"].as_str()),
        (Some(4.0), Some("referral"))
    );

    server.kill_dash_nine();
    let server = Server::start(&data, &args);
    assert_eq!(query(&server.url), before, "the same acquisitions and net CLV after kill -9");
    // A snapshot holds them too, and a second restart reads them from it.
    let (status, body) = post_json(&format!("{}/v1/admin/snapshot", server.url), "text/plain", "");
    assert_eq!(status, 200, "{body}");
    drop(server);
    let server = Server::start(&data, &args);
    assert_eq!(query(&server.url), before, "read back from the snapshot");
}
