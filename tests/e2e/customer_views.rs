//! One customer, one answer (issue 14, "the copies already disagree"): the
//! SQL `customers` table, `GET /v1/customers/{id}` and `patron score`'s
//! `customers.parquet` must give every customer of the CDNOW fixture the same
//! value in every column, at one watermark: right after a refit (HTTP scores
//! on read, SQL shows the scores of the last refit; with no event since, they
//! are the same scores), and for batch scoring "now" is the latest event too.

use patron_tests::{Server, cdnow_calibration, get_json, load_cdnow, post_json, score_in_days};
use serde_json::Value;

/// Rows of `customers.parquet` as JSON objects, through the same Arrow JSON
/// writer the SQL endpoint uses.
fn parquet_rows(path: &std::path::Path) -> Vec<serde_json::Map<String, Value>> {
    let batch = crate::batch_cdnow::read_parquet(path);
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let rows: Value = serde_json::from_slice(&writer.into_inner()).unwrap();
    rows.as_array().unwrap().iter().map(|r| r.as_object().unwrap().clone()).collect()
}

/// Timestamps differ only in spelling (`…Z` over HTTP, none in SQL JSON).
fn normalised(value: &Value) -> Value {
    match value.as_str() {
        Some(text) if text.len() >= 19 && text.as_bytes()[10] == b'T' => {
            Value::String(text.trim_end_matches('Z').trim_end_matches("+00:00").trim_end_matches(".000").to_owned())
        }
        _ => value.clone(),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
        _ => normalised(a) == normalised(b),
    }
}

#[test]
fn sql_http_and_batch_agree_on_every_customer_column_at_one_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    load_cdnow(&server);
    let (status, rows) = post_json(&format!("{}/v1/sql", server.url), "text/plain", "SELECT * FROM customers");
    assert_eq!(status, 200, "{rows}");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2357);
    // Batch scoring of the same purchases.
    let (csv, _) = cdnow_calibration();
    let csv_path = dir.path().join("calibration.csv");
    std::fs::write(&csv_path, csv).unwrap();
    score_in_days(&csv_path, &dir.path().join("batch"));
    let batch: std::collections::HashMap<String, serde_json::Map<String, Value>> =
        parquet_rows(&dir.path().join("batch/customers.parquet"))
            .into_iter()
            .map(|row| (row["customer_id"].as_str().unwrap().to_owned(), row))
            .collect();
    assert_eq!(batch.len(), rows.len());

    // The comparison can fail: doubles to 1e-12 relative, everything else exactly.
    assert!(
        !same(&Value::from(1.0), &Value::from(1.000_000_001)) && !same(&Value::from("Loyal"), &Value::from("Lost"))
    );
    let columns = rows[0].as_object().unwrap().len();
    assert!(columns >= 25, "only {columns} columns in customers");
    let mut compared = 0usize;
    let mut disagreements = Vec::new();
    for row in rows {
        let id = row["customer_id"].as_str().unwrap();
        let (status, customer) = get_json(&format!("{}/v1/customers/{id}", server.url));
        assert_eq!(status, 200, "{customer}");
        let batch_row = &batch[id];
        for (column, sql_value) in row.as_object().unwrap() {
            let http_value = customer.get(column).unwrap_or(&Value::Null);
            // The JSON writer leaves out nulls, so a missing batch value is null.
            let batch_value = batch_row.get(column).unwrap_or(&Value::Null);
            compared += 1;
            if !same(http_value, sql_value) {
                disagreements.push(format!("{id}.{column}: HTTP {http_value} vs SQL {sql_value}"));
            }
            if !same(batch_value, sql_value) {
                disagreements.push(format!("{id}.{column}: batch {batch_value} vs SQL {sql_value}"));
            }
        }
    }
    assert_eq!(compared, rows.len() * columns);
    let shown: Vec<&String> = disagreements.iter().take(20).collect();
    assert!(disagreements.is_empty(), "{} disagreements, the first: {shown:#?}", disagreements.len());
}

/// Every `customers` row as JSON, ordered by id.
fn customers_over_sql(server: &Server) -> Vec<Value> {
    let sql = "SELECT * FROM customers ORDER BY customer_id";
    let (status, rows) = post_json(&format!("{}/v1/sql", server.url), "text/plain", sql);
    assert_eq!(status, 200, "{rows}");
    rows.as_array().unwrap().clone()
}

/// The cells of `after` that differ from `before`, row by row (rows as JSON objects).
fn row_differences(before: &[Value], after: &[Value]) -> Vec<String> {
    assert_eq!(before.len(), after.len(), "a different number of customers");
    let mut differences = Vec::new();
    for (b, a) in before.iter().zip(after) {
        let (b, a) = (b.as_object().unwrap(), a.as_object().unwrap());
        for (column, value) in b {
            let other = a.get(column).unwrap_or(&Value::Null);
            if !same(value, other) {
                differences.push(format!("{}.{column}: {value} then {other}", b["customer_id"]));
            }
        }
        if a.len() != b.len() {
            differences.push(format!("{}: {} columns then {}", b["customer_id"], b.len(), a.len()));
        }
    }
    differences
}

/// Events after the refit: CDNOW's next 600 purchases (after 1997-09-30,
/// mostly customers the refit scored), three new customers, a refund and a
/// consent change.
fn events_after_the_refit() -> Vec<String> {
    let mut reader = csv::Reader::from_path(patron_tests::fixture("cdnow/cdnow_transactions.csv")).unwrap();
    let mut events: Vec<String> = reader
        .records()
        .map(|row| row.unwrap())
        .filter(|row| &row[1] > "19970930")
        .take(600)
        .enumerate()
        .map(|(i, row)| {
            let d = &row[1];
            format!(
                r#"{{"type":"purchase","event_id":"later-{i}","customer_id":"{}","timestamp":"{}-{}-{}T00:00:00Z","currency":"USD","revenue":"{}"}}"#,
                &row[0], &d[..4], &d[4..6], &d[6..], &row[3]
            )
        })
        .collect();
    for (i, day) in ["1997-10-02", "1997-10-20", "1997-11-05"].iter().enumerate() {
        events.push(format!(
            r#"{{"type":"purchase","event_id":"newcomer-{i}","customer_id":"newcomer-{i}","timestamp":"{day}T12:00:00Z","currency":"USD","revenue":"19.99"}}"#
        ));
    }
    events.push(
        r#"{"type":"refund","event_id":"refund-1","customer_id":"3","timestamp":"1997-10-03T00:00:00Z","currency":"USD","amount":"5.00"}"#.into(),
    );
    events.push(
        r#"{"type":"consent","event_id":"consent-1","customer_id":"4","timestamp":"1997-10-04T00:00:00Z","channels":{"email":true}}"#.into(),
    );
    events
}

/// Issue 18, "a restart serves what it served": after a refit and then more
/// events (customers rescored one by one, new customers, a refund, a
/// consent change), kill -9 and a restart on the same directory, and an
/// offline `patron query --data-dir`, every `customers` row equals what the
/// live server served, with no provisional scores or missing segments in
/// between. The refit's snapshot keeps the models, labels and interval
/// widths; the log tail replays the later events, and each customer is
/// scored as of the last refit or their own later purchase, as live.
#[test]
fn a_restart_and_an_offline_query_serve_the_rows_the_live_server_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = ["--currency", "USD", "--refit-interval", "3600"];
    let server = Server::start(&data, &flags);
    load_cdnow(&server);
    let at_refit = customers_over_sql(&server);
    let later = events_after_the_refit();
    let (status, body) = post_json(&format!("{}/v1/events", server.url), "application/x-ndjson", &later.join("\n"));
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(later.len() as u64)), "{body}");
    let served = customers_over_sql(&server);
    assert_eq!(served.len(), 2360);
    // The later events changed what is served (else the test would prove nothing).
    let moved = at_refit.iter().zip(&served).filter(|(a, b)| a["clv"] != b["clv"]).count();
    assert!(moved > 100, "only {moved} customers rescored");
    // Every buyer is scored; the newcomers have no labels until the next refit.
    let newcomer = |row: &Value| row["customer_id"].as_str().is_some_and(|id| id.starts_with("newcomer-"));
    assert!(served.iter().all(|row| row["clv"].is_number()), "scored rows");
    assert!(served.iter().all(|row| row["rfm_segment"].is_string() != newcomer(row)), "labels of the refit");
    server.kill_dash_nine();

    let restarted = Server::start(&data, &flags);
    let (status, customer) = get_json(&format!("{}/v1/customers/1", restarted.url));
    assert_eq!((status, customer["provisional"].as_bool()), (200, Some(false)), "{customer}");
    let differences = row_differences(&served, &customers_over_sql(&restarted));
    assert!(differences.is_empty(), "{} cells differ after the restart: {:?}", differences.len(), &differences[..1]);
    restarted.kill_dash_nine();

    let sql = "SELECT * FROM customers ORDER BY customer_id";
    let offline = patron_tests::query_offline(&data, &["--currency", "USD"], "json", sql);
    assert!(offline.status.success(), "{}", patron_tests::transcript(&offline));
    let rows: Value = serde_json::from_slice(&offline.stdout).unwrap();
    let differences = row_differences(&served, rows.as_array().unwrap());
    assert!(differences.is_empty(), "{} cells differ offline: {:?}", differences.len(), &differences[..1]);
}
