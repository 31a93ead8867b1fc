//! `patron score` on the CDNOW sample must recover the published estimates
//! (Fader, Hardie & Lee 2005) and lifetimes' per-customer values.

use std::collections::HashMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use patron_tests::{fixture, score_like_cdnow};
use serde_json::Value;

pub(crate) fn read_parquet(path: &std::path::Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

struct Run {
    params: Value,
    customers: RecordBatch,
}

fn score_cdnow(model: &str) -> Run {
    let out = tempfile::tempdir().unwrap();
    let (params, _) = score_like_cdnow(&fixture("cdnow/cdnow_transactions.csv"), out.path(), &["--model", model]);
    Run { params, customers: read_parquet(&out.path().join("customers.parquet")) }
}

fn model<'a>(params: &'a Value, name: &str) -> &'a Value {
    params["models"].as_array().unwrap().iter().find(|m| m["model"] == name).unwrap_or_else(|| panic!("{name} missing"))
}

/// `value` printed with `decimals` decimals must read `published`.
fn assert_printed(value: f64, published: f64, decimals: i32, what: &str) {
    let scale = 10f64.powi(decimals);
    assert_eq!((value * scale).round() / scale, published, "{what}: fitted {value}, published {published}");
}

#[test]
fn cdnow_recovers_the_published_bgnbd_and_gamma_gamma_estimates() {
    let run = score_cdnow("bgnbd");
    let bg = model(&run.params, "bgnbd");
    assert_eq!(bg["time_unit"], "weeks");
    assert_eq!(bg["customers"], 2357);
    let p = &bg["params"];
    assert_printed(p["r"].as_f64().unwrap(), 0.243, 3, "r");
    assert_printed(p["alpha"].as_f64().unwrap(), 4.414, 3, "alpha");
    assert_printed(p["a"].as_f64().unwrap(), 0.793, 3, "a");
    assert_printed(p["b"].as_f64().unwrap(), 2.426, 3, "b");
    assert_printed(bg["log_likelihood"].as_f64().unwrap(), -9582.4, 1, "log-likelihood");
    let gg = model(&run.params, "gamma_gamma");
    assert_eq!(gg["customers"], 946);
    assert_printed(gg["params"]["p"].as_f64().unwrap(), 6.25, 2, "p");
    assert_printed(gg["params"]["q"].as_f64().unwrap(), 3.74, 2, "q");
    assert_printed(gg["params"]["gamma"].as_f64().unwrap(), 15.44, 2, "gamma");
    // Standard errors as lifetimes reports them for the same fits (weeks).
    let se = |m: &serde_json::Value, name: &str| m["std_errors"][name].as_f64().unwrap();
    assert_printed(se(bg, "r"), 0.0126, 4, "se(r)");
    assert_printed(se(bg, "alpha"), 0.378, 3, "se(alpha)");
    assert_printed(se(bg, "a"), 0.186, 3, "se(a)");
    assert_printed(se(bg, "b"), 0.705, 3, "se(b)");
    assert_printed(se(gg, "q"), 0.290, 3, "se(q)");
    // The other published fit on this sample (fixtures/README.md, the CDNOW references).
    let pareto = model(&run.params, "pareto_nbd");
    assert_printed(pareto["params"]["r"].as_f64().unwrap(), 0.553, 3, "pareto r");
    assert_printed(pareto["params"]["s"].as_f64().unwrap(), 0.606, 3, "pareto s");
    assert_printed(pareto["log_likelihood"].as_f64().unwrap(), -9595.0, 1, "pareto LL");
    let names: Vec<&str> =
        run.params["models"].as_array().unwrap().iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["bgnbd", "mbgnbd", "pareto_nbd", "gamma_gamma"]);
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a dyn Array {
    batch.column_by_name(name).unwrap_or_else(|| panic!("column {name}")).as_ref()
}

fn by_customer(batch: &RecordBatch) -> HashMap<String, usize> {
    let ids = column(batch, "customer_id").as_string::<i32>();
    (0..ids.len()).map(|i| (ids.value(i).to_owned(), i)).collect()
}

fn csv_rows(path: &str) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(fixture(path)).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| headers.iter().zip(r.unwrap().iter()).map(|(h, v)| (h.into(), v.into())).collect())
        .collect()
}

#[test]
fn cdnow_summaries_equal_the_published_summary_file() {
    let run = score_cdnow("mbgnbd");
    let index = by_customer(&run.customers);
    let frequency = column(&run.customers, "frequency").as_primitive::<Int64Type>();
    let recency = column(&run.customers, "recency_days").as_primitive::<Float64Type>();
    let tenure = column(&run.customers, "tenure_days").as_primitive::<Float64Type>();
    let summary = csv_rows("cdnow/cdnow_customers_summary_with_transactions.csv");
    assert_eq!(summary.len(), 2357);
    assert_eq!(run.customers.num_rows(), 2357);
    for row in &summary {
        let i = index[&row["ID"]];
        let weeks = |days: f64| ((days / 7.0) * 100.0).round() / 100.0;
        assert_eq!(frequency.value(i).to_string(), row["x"], "customer {} x", row["ID"]);
        assert_eq!(weeks(recency.value(i)), row["t_x"].parse::<f64>().unwrap(), "customer {} t_x", row["ID"]);
        assert_eq!(weeks(tenure.value(i)), row["T"].parse::<f64>().unwrap(), "customer {} T", row["ID"]);
    }
}

#[test]
fn cdnow_p_alive_matches_lifetimes_for_the_first_twenty_customers() {
    // lifetimes' values use its own fit, which differs from ours in the 5th digit.
    let run = score_cdnow("bgnbd");
    let index = by_customer(&run.customers);
    let p_alive = column(&run.customers, "p_alive").as_primitive::<Float64Type>();
    let churn = column(&run.customers, "churn_risk").as_primitive::<Float64Type>();
    for row in csv_rows("cdnow/reference/cdnow_first20_fitted_params.csv") {
        let i = index[&row["customer_id"]];
        let want: f64 = row["bgnbd_p_alive"].parse().unwrap();
        assert!(
            (p_alive.value(i) - want).abs() < 1e-3,
            "customer {}: {} vs {want}",
            row["customer_id"],
            p_alive.value(i)
        );
        assert!((churn.value(i) - (1.0 - p_alive.value(i))).abs() < 1e-15);
    }
}

#[test]
fn customers_parquet_has_every_contract_column_and_sane_values() {
    let run = score_cdnow("mbgnbd");
    let c = &run.customers;
    let names: Vec<&str> = c.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "customer_id",
            "first_purchase_at",
            "last_purchase_at",
            "orders",
            "frequency",
            "recency_days",
            "tenure_days",
            "revenue",
            "avg_order_value",
            "p_alive",
            "churn_risk",
            "expected_orders_90d",
            "expected_order_value",
            "clv",
            "rfm_r",
            "rfm_f",
            "rfm_m",
            "rfm_segment",
            "value_tier",
            "relationship",
            "lifecycle_stage",
            "consent_email",
            "consent_sms",
            "consent_push",
            "updated_at",
            "p_purchase_30d",
            "expected_orders_365d",
            "next_order_at",
            "clv_low",
            "clv_high",
            "net_clv",
            "acquisition_cost",
            "acquisition_channel",
        ],
        "the contract's columns, in its order"
    );
    let n = c.num_rows();
    assert_eq!(n, 2357);
    // Every CDNOW customer bought and has scores and labels; none stated
    // consent, and a file states no acquisitions.
    for name in &names {
        let nulls = column(c, name).null_count();
        let expected = if name.starts_with("consent_") || name.starts_with("acquisition_") { n } else { 0 };
        assert_eq!(nulls, expected, "{name}: {nulls} nulls");
    }
    let f64s = |name: &str| column(c, name).as_primitive::<Float64Type>().values().to_vec();
    let i64s = |name: &str| column(c, name).as_primitive::<Int64Type>().values().to_vec();
    let i32s = |name: &str| column(c, name).as_primitive::<arrow::datatypes::Int32Type>().values().to_vec();
    let (orders, frequency) = (i64s("orders"), i64s("frequency"));
    assert!(orders.iter().zip(&frequency).all(|(&o, &f)| o >= 1 && (0..o).contains(&f)), "0 <= frequency < orders");
    let (recency, tenure) = (f64s("recency_days"), f64s("tenure_days"));
    assert!(recency.iter().zip(&tenure).all(|(&r, &t)| 0.0 <= r && r <= t), "0 <= recency <= tenure");
    let (revenue, aov) = (f64s("revenue"), f64s("avg_order_value"));
    assert!(revenue.iter().zip(&aov).all(|(&r, &a)| r >= 0.0 && a >= 0.0 && a <= r + 1e-9));
    let (p_alive, churn) = (f64s("p_alive"), f64s("churn_risk"));
    assert!(p_alive.iter().zip(&churn).all(|(&p, &c)| (0.0..=1.0).contains(&p) && (c - (1.0 - p)).abs() < 1e-12));
    for name in ["expected_orders_90d", "expected_order_value", "clv", "p_purchase_30d", "expected_orders_365d"] {
        assert!(f64s(name).iter().all(|v| v.is_finite() && *v >= 0.0), "{name}: finite, not negative");
    }
    let (p30, e90, e365) = (f64s("p_purchase_30d"), f64s("expected_orders_90d"), f64s("expected_orders_365d"));
    for i in 0..n {
        assert!(p30[i] <= p_alive[i] && p30[i] <= e90[i] && e90[i] <= e365[i], "customer row {i}: timing out of order");
    }
    for name in ["rfm_r", "rfm_f", "rfm_m"] {
        assert!(i32s(name).iter().all(|v| (1..=5).contains(v)), "{name} in 1..=5");
    }
    let labels = |name: &str, allowed: &[&str]| {
        let values = column(c, name).as_string_view();
        let unknown: Vec<&str> = (0..n).map(|i| values.value(i)).filter(|v| !allowed.contains(v)).collect();
        assert!(unknown.is_empty(), "{name}: unknown labels {:?}", &unknown[..unknown.len().min(3)]);
    };
    labels("rfm_segment", &patron_score::RfmSegment::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    labels("value_tier", &patron_score::ValueTier::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    labels("relationship", &patron_score::Relationship::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    labels("lifecycle_stage", &patron_score::LifecycleStage::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let tiers = column(c, "value_tier").as_string_view();
    let most = (0..n).filter(|&i| tiers.value(i) == "most_valuable").count();
    assert!((most as f64 / n as f64 - 0.2).abs() < 0.01, "{most} most valuable");
    let micros = |name: &str| {
        arrow::compute::cast(column(c, name), &arrow::datatypes::DataType::Int64)
            .unwrap()
            .as_primitive::<Int64Type>()
            .values()
            .to_vec()
    };
    let (first, last, updated) = (micros("first_purchase_at"), micros("last_purchase_at"), micros("updated_at"));
    assert!(first.iter().zip(&last).zip(&updated).all(|((f, l), u)| f <= l && l <= u), "first <= last <= updated");
    let next = micros("next_order_at");
    assert!(next.iter().zip(&updated).all(|(n, u)| n > u), "the next order is after now");
}
