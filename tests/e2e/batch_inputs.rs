//! `patron score` on broken, NDJSON and Parquet inputs.

use patron_tests::{fixture, patron, run_score, score_like_cdnow, transcript};

use crate::batch_cdnow::read_parquet;

#[test]
fn broken_csv_reports_line_numbered_reasons_and_scores_the_good_rows() {
    let out = tempfile::tempdir().unwrap();
    let input = fixture("broken/transactions_broken.csv");
    let output =
        patron(&["score", "--input", input.to_str().unwrap(), "--out", out.path().to_str().unwrap(), "--top", "0"]);
    let text = transcript(&output);
    assert!(output.status.success(), "{text}");
    for expected in [
        "rejected line 4: date: \"1997-13-45\" does not match",
        "rejected line 6: cds: \"abc\" is not a decimal number",
        "rejected line 7: amount: \"twelve\" is not a decimal number",
        "rejected line 8: customer_id: empty customer id",
        "rejected line 9: (row): has 3 fields, the header has 4",
        "rejected line 10: cds: quantity is 0",
        "rejected line 12: timestamp: 1989-01-01T00:00:00.000Z is before 1990-01-01",
        "rejected line 15: amount: \"NaN\" is not a decimal number",
        "rejected line 5: customer_id: b2 has no purchases, so there is nothing to refund",
        "9 records rejected",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // Line 5 (amount -5.00) is a valid refund, refused: b2 bought nothing.
    assert!(text.contains("6925 events accepted"), "6919 CDNOW rows and 6 good hand-written ones: {text}");
    let customers = read_parquet(&out.path().join("customers.parquet"));
    assert_eq!(customers.num_rows(), 2357 + 4, "b1 and b3-b5 have a good purchase");
}

#[test]
fn missing_columns_are_fatal_with_the_flag_to_fix_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("no_amount.csv");
    std::fs::write(&input, "customer_id,date\n1,2020-01-01\n").unwrap();
    let output = patron(&["score", "--input", input.to_str().unwrap(), "--out", dir.path().to_str().unwrap()]);
    assert!(!output.status.success());
    let text = transcript(&output);
    assert!(text.contains("no amount or unit price column found; name it with --amount-col or --price-col"), "{text}");
    let output = patron(&["score", "--input", input.to_str().unwrap(), "--customer-col", "cust"]);
    assert!(transcript(&output).contains("--customer-col \"cust\" is not a column (columns: customer_id, date)"));
}

#[test]
fn nothing_readable_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.csv");
    std::fs::write(&input, "customer_id,date,amount\n,2020-01-01,3\n").unwrap();
    let output = patron(&["score", "--input", input.to_str().unwrap(), "--out", dir.path().to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(transcript(&output).contains("nothing could be read"), "{}", transcript(&output));
}

/// Online-Retail-shaped rows: invoices as baskets, unit prices, a cancellation.
const RETAIL: &str = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,HEART HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom
536365,71053,LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom
536366,22633,HAND WARMER,6,12/1/2010 8:28,1.85,17850,United Kingdom
C536379,D,Discount,-1,12/1/2010 9:41,27.50,14527,United Kingdom
536400,22633,HAND WARMER,2,12/8/2010 10:00,1.85,14527,United Kingdom
536401,22633,HAND WARMER,1,12/9/2010 10:00,1.85,14527,United Kingdom
C536402,22633,HAND WARMER,-1,12/9/2010 11:00,1.85,14527,United Kingdom
";

#[test]
fn orders_are_baskets_unit_prices_multiply_and_negative_rows_are_refunds() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("retail.csv");
    std::fs::write(&input, RETAIL).unwrap();
    let output = patron(&[
        "score",
        "--input",
        input.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
        "--currency",
        "GBP",
        // Every date of this sample reads both month-first and day-first.
        "--time-format",
        "%m/%d/%Y %H:%M",
    ]);
    let text = transcript(&output);
    assert!(text.contains("order=InvoiceNo product=StockCode quantity=Quantity price=UnitPrice"), "{text}");
    assert!(text.contains("5 events accepted"), "4 invoices and 1 cancellation: {text}");
    assert!(text.contains("1 refunded rows match no earlier order"), "the discount names no order: {text}");
    assert!(
        text.contains("rejected line 5: amount: 27.50 exceeds the customer's net revenue of 5.55"),
        "a discount larger than what was paid is refused, not turned into negative revenue: {text}"
    );
    let customers = read_parquet(&dir.path().join("customers.parquet"));
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    let ids = customers.column_by_name("customer_id").unwrap().as_string::<i32>();
    let orders = customers.column_by_name("orders").unwrap().as_primitive::<Int64Type>();
    let frequency = customers.column_by_name("frequency").unwrap().as_primitive::<Int64Type>();
    let revenue = customers.column_by_name("revenue").unwrap().as_primitive::<Float64Type>();
    let row = |id: &str| (0..ids.len()).find(|&i| ids.value(i) == id).unwrap();
    let a = row("17850");
    assert_eq!((orders.value(a), frequency.value(a)), (2, 0), "two invoices on one day are one occasion");
    assert!((revenue.value(a) - (6.0 * 2.55 + 6.0 * 3.39 + 6.0 * 1.85)).abs() < 1e-9);
    let b = row("14527");
    assert_eq!((orders.value(b), frequency.value(b)), (2, 1));
    assert!((revenue.value(b) - 3.70).abs() < 1e-9, "the cancellation nets against invoice 536401");
}

fn score_cdnow_file(input: &std::path::Path, out: &std::path::Path) -> (serde_json::Value, String) {
    score_like_cdnow(input, out, &["--top", "0"])
}

#[test]
fn ndjson_events_and_parquet_transactions_score_exactly_like_csv() {
    let dir = tempfile::tempdir().unwrap();
    let csv_input = fixture("cdnow/cdnow_transactions.csv");
    let (from_csv, _) = score_cdnow_file(&csv_input, &dir.path().join("csv"));

    // The same transactions as producer events, plus a duplicate delivery,
    // a consent-only customer and two bad records.
    let mut lines = Vec::new();
    let mut reader = csv::Reader::from_path(&csv_input).unwrap();
    for (i, row) in reader.records().enumerate() {
        let row = row.unwrap();
        let d = &row[1];
        lines.push(format!(
            r#"{{"type":"purchase","event_id":"line-{}","userId":"{}","timestamp":"{}-{}-{}T00:00:00Z","currency":"USD","revenue":{}}}"#,
            i + 2, &row[0], &d[..4], &d[4..6], &d[6..], &row[3]
        ));
    }
    lines.push(lines[0].clone());
    lines.push(r#"{"type":"consent","event_id":"k1","customer_id":"prospect-1","timestamp":"1997-03-01T10:00:00Z","channels":{"email":true}}"#.into());
    lines.push(
        r#"{"type":"purchase","event_id":"bad","customer_id":"1","timestamp":"1997-02-01T10:00:00Z","revenue":"-3"}"#
            .into(),
    );
    lines.push("{this is not json".into());
    let ndjson = dir.path().join("cdnow.ndjson");
    std::fs::write(&ndjson, lines.join("\n")).unwrap();
    let (from_ndjson, text) = score_cdnow_file(&ndjson, &dir.path().join("ndjson"));
    assert!(text.contains("4961 events accepted, 1 duplicates"), "{text}");
    assert!(text.contains("rejected line 6922: revenue: must not be negative"), "{text}");
    assert!(text.contains("rejected line 6923: invalid JSON"), "{text}");
    assert_eq!(from_ndjson["models"], from_csv["models"], "same events, same summaries, same fits");
    let customers = read_parquet(&dir.path().join("ndjson/customers.parquet"));
    assert_eq!(customers.num_rows(), 2358, "the consent-only customer is a prospect row");
    use arrow::array::{Array, AsArray};
    let ids = customers.column_by_name("customer_id").unwrap().as_string::<i32>();
    let row = (0..ids.len()).find(|&i| ids.value(i) == "prospect-1").unwrap();
    assert_eq!(customers.column_by_name("lifecycle_stage").unwrap().as_string_view().value(row), "prospect");
    assert!(customers.column_by_name("consent_email").unwrap().as_boolean().value(row));
    assert!(customers.column_by_name("clv").unwrap().is_null(row));

    let parquet = dir.path().join("cdnow.parquet");
    write_csv_as_parquet(&csv_input, &parquet);
    let (from_parquet, text) = score_cdnow_file(&parquet, &dir.path().join("parquet"));
    assert!(text.contains("Read 6919 parquet records"), "{text}");
    assert_eq!(from_parquet["models"], from_csv["models"]);
}

fn write_csv_as_parquet(csv_path: &std::path::Path, parquet_path: &std::path::Path) {
    use std::sync::Arc;
    let mut reader = csv::Reader::from_path(csv_path).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let col = |i: usize| -> arrow::array::ArrayRef {
        Arc::new(arrow::array::StringArray::from(rows.iter().map(|r| r[i].to_owned()).collect::<Vec<_>>()))
    };
    let amount: arrow::array::ArrayRef = Arc::new(arrow::array::Float64Array::from(
        rows.iter().map(|r| r[3].parse::<f64>().unwrap()).collect::<Vec<_>>(),
    ));
    let batch = arrow::record_batch::RecordBatch::try_from_iter([
        ("customer_id", col(0)),
        ("date", col(1)),
        ("amount", amount),
    ])
    .unwrap();
    let file = std::fs::File::create(parquet_path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Issue 20: a semicolon-separated file failed with a misleading "not a
/// column" message, and Excel serial dates could not be read at all.
#[test]
fn regression_delimiters_are_detected_or_given_and_excel_dates_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let cdnow = std::fs::read_to_string(fixture("cdnow/cdnow_transactions.csv")).unwrap();
    let (comma, _) = score_cdnow_file(&fixture("cdnow/cdnow_transactions.csv"), &dir.path().join("comma"));
    for (name, delimiter, flag) in [("semicolon", ";", None), ("tab", "\t", None), ("pipe", "|", Some("|"))] {
        let input = dir.path().join(format!("{name}.csv"));
        std::fs::write(&input, cdnow.replace(',', delimiter)).unwrap();
        let mut extra = vec!["--top", "0"];
        if let Some(flag) = flag {
            extra.extend(["--delimiter", flag]);
        }
        let (params, text) = score_like_cdnow(&input, &dir.path().join(name), &extra);
        let how = if flag.is_some() { "--delimiter" } else { "detected" };
        assert!(text.contains(&format!("({how})")), "{name}: {text}");
        assert_eq!(params["models"], comma["models"], "{name}: the same fits as the comma file");
    }
    let excel = dir.path().join("excel.csv");
    std::fs::write(&excel, "customer,when,amount\nc1,40513.35,10\nc1,40600,12.5\nc2,40513,3\n").unwrap();
    let out = dir.path().join("excel");
    let output = patron(&[
        "score",
        "--input",
        excel.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--customer-col",
        "customer",
        "--time-col",
        "when",
        "--amount-col",
        "amount",
        "--time-format",
        "excel",
        "--top",
        "0",
    ]);
    let text = transcript(&output);
    assert!(text.contains("3 events accepted"), "{text}");
    assert!(text.contains("Excel serial days"), "{text}");
    assert!(text.contains("note: no --currency given: the file's amounts are taken as EUR"), "said loudly: {text}");
    let output = patron(&["score", "--input", excel.to_str().unwrap(), "--delimiter", "comma"]);
    assert!(!output.status.success() && transcript(&output).contains("is not a delimiter"), "{}", transcript(&output));
}

/// Issue 20: day-first dates (`01/12/2010`) were taken as month-first:
/// thousands of rows accepted with swapped dates, the rest rejected. Many
/// rows are now looked at before a reading is chosen, and a file that reads
/// both ways is refused with an example of each.
#[test]
fn regression_day_first_dates_are_recognised_and_ambiguous_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let day_first = dir.path().join("day_first.csv");
    std::fs::write(
        &day_first,
        "customer,when,amount\nc1,01/12/2010 08:26,10\nc1,02/12/2010 09:00,12\nc2,13/12/2010 10:00,3\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let args = ["--customer-col", "customer", "--time-col", "when", "--amount-col", "amount", "--currency", "GBP"];
    let mut score = vec!["score", "--input", day_first.to_str().unwrap(), "--out", out.to_str().unwrap(), "--top", "0"];
    score.extend(args);
    let output = patron(&score);
    let text = transcript(&output);
    assert!(text.contains("3 events accepted") && text.contains("%d/%m/%Y %H:%M"), "{text}");
    let customers = read_parquet(&out.join("customers.parquet"));
    let first = customers.column_by_name("first_purchase_at").unwrap();
    for row in 0..customers.num_rows() {
        let first = arrow::util::display::array_value_to_string(first, row).unwrap();
        assert!(first.starts_with("2010-12-"), "read day-first: {first}");
    }
    let ambiguous = dir.path().join("ambiguous.csv");
    std::fs::write(&ambiguous, "customer,when,amount\nc1,01/12/2010,10\nc2,02/11/2010,12\n").unwrap();
    let mut score = vec!["score", "--input", ambiguous.to_str().unwrap(), "--out", out.to_str().unwrap()];
    score.extend(args);
    let output = patron(&score);
    let text = transcript(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("when: \"01/12/2010\" reads as 2010-01-12T00:00:00.000Z month-first and as 2010-12-01T00:00:00.000Z day-first"),
        "{text}"
    );
    assert!(text.contains("--time-format '%m/%d/%Y' or '%d/%m/%Y'"), "{text}");
}

/// Issue 20: the 20 examples printed were all of one error while 234,047
/// rows failed for another. A few examples of each kind are shown.
#[test]
fn regression_every_kind_of_rejection_gets_examples() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.csv");
    let mut text = String::from("customer_id,date,amount\n");
    for i in 0..1_500 {
        text.push_str(&format!("c{i},not a date,1\n"));
    }
    text.push_str("c1,2020-01-01,twelve\nc2,2020-01-02,also bad\nc3,2020-01-03,5\n");
    std::fs::write(&input, text).unwrap();
    let output = patron(&[
        "score",
        "--input",
        input.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
        "--currency",
        "EUR",
    ]);
    let text = transcript(&output);
    let dates = text.lines().filter(|l| l.contains("rejected line") && l.contains("date:")).count();
    assert_eq!(dates, 3, "a few of the frequent kind: {text}");
    assert!(text.contains("rejected line 1502: amount: \"twelve\""), "the rare kind is shown too: {text}");
    assert!(text.contains("rejected line 1503: amount: \"also bad\""), "{text}");
    assert!(text.contains("… and 1497 more"), "{text}");
}

/// UCI Online Retail as published, with only the currency: its `C`-prefixed
/// cancellation invoices net against the invoices they cancel.
#[test]
fn regression_uci_cancellations_net_against_their_invoices() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("online_retail/online_retail.csv.gz");
    let (_, text) = run_score(&input, dir.path(), &["--currency", "GBP"]);
    assert!(text.contains("order=InvoiceNo product=StockCode quantity=Quantity price=UnitPrice"), "{text}");
    let customers = read_parquet(&dir.path().join("customers.parquet"));
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float64Type;
    let ids = customers.column_by_name("customer_id").unwrap().as_string::<i32>();
    let revenue = customers.column_by_name("revenue").unwrap().as_primitive::<Float64Type>();
    let clv = customers.column_by_name("clv").unwrap().as_primitive::<Float64Type>();
    let row = |id: &str| (0..ids.len()).find(|&i| ids.value(i) == id).unwrap();
    // 16446 bought 2.90 in May 2011, then 80,995 units of 23843 (168,469.60)
    // on 9 December, cancelled minutes later by C581484. Before netting, that
    // order's value made their CLV 180,420.
    let big = row("16446.0");
    assert!((revenue.value(big) - 2.90).abs() < 1e-9);
    assert!(clv.value(big) < 2_000.0, "CLV {} on a net revenue of 2.90", clv.value(big));
    // 12346 bought 74,215 units once and cancelled them the same day.
    assert!(revenue.value(row("12346.0")).abs() < 1e-9);
    assert!((0..ids.len()).all(|i| revenue.value(i) >= 0.0), "no customer ends with negative revenue");
    assert!(text.contains("refunded rows match no earlier order"), "{text}");
    assert!(
        text.contains("has no purchases, so there is nothing to refund"),
        "refund-only customers are named: {text}"
    );
}
