//! `patron backtest`: on CDNOW (Fader, Hardie & Lee's split) the expected
//! holdout purchases of every customer match lifetimes', the report and the
//! plots are written, and the model beats both baselines where it should.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type};
use patron_tests::{Server, fixture, load_cdnow, patron, post_json, transcript};
use serde_json::Value;

use crate::batch_cdnow::read_parquet;

fn backtest(input: &Path, out: &Path, flags: &[&str]) -> (Value, String) {
    let mut args =
        vec!["backtest", "--input", input.to_str().expect("utf-8 path"), "--out", out.to_str().expect("utf-8 path")];
    args.extend_from_slice(flags);
    let output = patron(&args);
    let text = transcript(&output);
    assert!(output.status.success(), "{text}");
    let report = std::fs::read(out.join("report.json")).unwrap_or_else(|e| panic!("report.json: {e}\n{text}"));
    (serde_json::from_slice(&report).expect("valid JSON"), text)
}

fn cdnow(out: &Path, model: &str) -> (Value, String) {
    backtest(
        &fixture("cdnow/cdnow_transactions.csv"),
        out,
        &[
            "--calibration-end",
            "1997-09-30",
            "--holdout-end",
            "1998-06-30",
            "--time-unit",
            "weeks",
            "--currency",
            "USD",
            "--model",
            model,
        ],
    )
}

/// lifetimes' per-customer holdout expectations, `fixtures/cdnow/reference/lifetimes_holdout.csv`.
fn lifetimes_holdout() -> HashMap<String, HashMap<String, f64>> {
    let mut reader = csv::Reader::from_path(fixture("cdnow/reference/lifetimes_holdout.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let values =
                headers.iter().zip(r.iter()).skip(1).map(|(h, v)| (h.to_owned(), v.parse().unwrap())).collect();
            (r[0].to_owned(), values)
        })
        .collect()
}

fn predictor<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["predictors"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name}"))
}

#[test]
fn cdnow_holdout_expectations_match_lifetimes_for_both_beta_geometric_models() {
    let reference = lifetimes_holdout();
    for model in ["bgnbd", "mbgnbd"] {
        let out = tempfile::tempdir().unwrap();
        let (report, text) = cdnow(out.path(), model);
        assert_eq!(report["customers_judged"], 2357, "{text}");
        assert_eq!(report["holdout_days"], 273.0);
        let batch = read_parquet(&out.path().join("customers.parquet"));
        let ids = batch.column_by_name("customer_id").unwrap().as_string::<i32>();
        let expected = batch.column_by_name("expected_holdout_orders").unwrap().as_primitive::<Float64Type>();
        let actual = batch.column_by_name("actual_holdout_orders").unwrap().as_primitive::<Int64Type>();
        let p_alive = batch.column_by_name("p_alive").unwrap().as_primitive::<Float64Type>();
        assert_eq!(batch.num_rows(), reference.len());
        let mut worst: f64 = 0.0;
        for i in 0..batch.num_rows() {
            let want = &reference[ids.value(i)];
            let gap = (expected.value(i) - want[&format!("{model}_expected_holdout")]).abs();
            worst = worst.max(gap);
            assert!(gap < 1e-5, "{model} customer {}: {} vs lifetimes {want:?}", ids.value(i), expected.value(i));
            assert!((p_alive.value(i) - want[&format!("{model}_p_alive")]).abs() < 1e-5, "{model} p_alive {i}");
            assert_eq!(actual.value(i) as f64, want["frequency_holdout"], "holdout purchases of {}", ids.value(i));
        }
        eprintln!("{model}: largest gap to lifetimes {worst:e}");
    }
}

#[test]
fn cdnow_report_has_the_calibration_table_both_baselines_and_the_plots() {
    let out = tempfile::tempdir().unwrap();
    let (report, text) = cdnow(out.path(), "bgnbd");
    let model = predictor(&report, "bgnbd");
    let table = model["calibration_table"].as_array().unwrap();
    assert_eq!(table.len(), 8);
    assert_eq!(table[7]["or_more"], true);
    // Customers with no calibration repeat: Fader, Hardie & Lee (2005, Fig. 4)
    // plot about 0.23 expected and 0.24 actual holdout purchases.
    let (zero_expected, zero_actual) =
        (table[0]["expected_orders"].as_f64().unwrap(), table[0]["actual_orders"].as_f64().unwrap());
    assert!((0.18..0.28).contains(&zero_expected) && (0.18..0.3).contains(&zero_actual), "{table:?}");
    let q = &model["quality"];
    for name in ["last_period", "rfm"] {
        let baseline = &predictor(&report, name)["quality"];
        assert!(
            q["mae"].as_f64().unwrap() < baseline["mae"].as_f64().unwrap(),
            "the model's MAE should beat {name}: {q} vs {baseline}"
        );
        assert!(q["brier"].as_f64().unwrap() < baseline["brier"].as_f64().unwrap(), "Brier vs {name}");
    }
    let auc = q["auc"].as_f64().unwrap();
    assert!(auc > 0.7 && auc < 1.0, "AUC {auc}");
    let lift = q["decile_lift"].as_array().unwrap();
    assert_eq!(lift.len(), 10);
    let shares: f64 = lift.iter().map(|d| d["revenue_share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9);
    assert!(lift[0]["lift"].as_f64().unwrap() > 2.0, "{lift:?}");
    for plot in ["calibration.svg", "decile_lift.svg"] {
        let svg = std::fs::read_to_string(out.path().join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("bgnbd") && svg.contains("rfm"), "{plot}");
    }
    assert!(text.contains("Calibration table (bgnbd)") && text.contains("last_period"), "{text}");
}

#[test]
fn backtest_refuses_a_holdout_that_ends_before_the_calibration() {
    let out = tempfile::tempdir().unwrap();
    let output = patron(&[
        "backtest",
        "--input",
        fixture("cdnow/cdnow_transactions.csv").to_str().unwrap(),
        "--calibration-end",
        "1997-09-30",
        "--holdout-end",
        "1997-06-30",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(transcript(&output).contains("--holdout-end"), "{}", transcript(&output));
}

/// Issue 18, item 5: on UCI Online Retail (wholesale buyers, cancellations,
/// calibration to 2011-09-10) the fits used to fail, so no holdout check was
/// possible. Now every purchase model fits with its dropout on the bound, as
/// lifetimes' MBG/NBD does on the same summary (benches/compare/uci_fits_vs_lifetimes.sh),
/// the report says so, and the holdout check runs.
#[test]
fn uci_backtest_runs_and_names_the_parameter_on_its_bound() {
    let out = tempfile::tempdir().unwrap();
    let (report, text) = backtest(
        &fixture("online_retail/online_retail.csv.gz"),
        out.path(),
        &["--calibration-end", "2011-09-10", "--holdout-end", "2011-12-09", "--currency", "GBP"],
    );
    let models = report["model_params"]["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().filter_map(|m| m["model"].as_str()).collect();
    assert_eq!(names, ["bgnbd", "mbgnbd", "pareto_nbd", "gamma_gamma"], "every model fits: {report}");
    for model in &models[..3] {
        let warnings = model["warnings"].as_array().unwrap_or_else(|| panic!("no warnings: {model}"));
        let dropout = if model["model"] == "pareto_nbd" { "s = " } else { "a = " };
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().unwrap().starts_with(dropout) && w.as_str().unwrap().contains("P(alive)")),
            "{model}"
        );
        // The purchase rates are identified all the same: lifetimes' MBG/NBD has r 0.7224, α 65.862 days.
        let (r, alpha) = (model["params"]["r"].as_f64().unwrap(), model["params"]["alpha"].as_f64().unwrap());
        assert!((r - 0.7224).abs() < 1e-3 && (alpha - 65.862).abs() < 0.05, "{model}");
        // So they keep standard errors, given the dropout at its bound; the
        // dropout's parameters have none.
        let errors = &model["std_errors"];
        let (third, fourth) = if model["model"] == "pareto_nbd" { ("s", "beta") } else { ("a", "b") };
        assert!(errors[third].is_null() && errors[fourth].is_null(), "{model}");
        if model["model"] != "pareto_nbd" {
            let (se_r, se_alpha) = (errors["r"].as_f64().unwrap(), errors["alpha"].as_f64().unwrap());
            assert!(se_r > 0.0 && se_r < 0.1 * r && se_alpha > 0.0 && se_alpha < 0.1 * alpha, "{model}");
        }
    }
    assert!(models[3].get("warnings").is_none(), "Gamma-Gamma is interior: {}", models[3]);
    assert!(text.contains("warning: a = ") && text.contains("is at its bound"), "{text}");
    let model = predictor(&report, "mbgnbd");
    assert_eq!(model["calibration_table"].as_array().unwrap().len(), 8);
    let (q, last) = (&model["quality"], &predictor(&report, "last_period")["quality"]);
    assert!(q["mae"].as_f64().unwrap() < last["mae"].as_f64().unwrap(), "{q} vs {last}");
    assert!(out.path().join("calibration.svg").exists() && out.path().join("decile_lift.svg").exists());
}

/// The CDNOW purchases after the calibration end (1997-09-30), as events
/// numbered like `patron_tests::cdnow_calibration`'s.
fn cdnow_holdout_events() -> Vec<String> {
    let mut reader = csv::Reader::from_path(fixture("cdnow/cdnow_transactions.csv")).unwrap();
    let mut events = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.unwrap();
        let d = &row[1];
        if d > "19970930" {
            events.push(format!(
                r#"{{"type":"purchase","event_id":"line-{}","customer_id":"{}","timestamp":"{}-{}-{}T00:00:00Z","currency":"USD","revenue":"{}"}}"#,
                i + 2, &row[0], &d[..4], &d[4..6], &d[6..], &row[3]
            ));
        }
    }
    events
}

/// Issue 18, item 3: a live server keeps its refit's predictions and the
/// `model_quality` table judges them against what happened since, exactly as
/// `patron backtest` judges the same split offline.
#[test]
fn the_live_model_quality_table_judges_a_refit_as_patron_backtest_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    load_cdnow(&server);
    let holdout = cdnow_holdout_events();
    for chunk in holdout.chunks(1000) {
        let (status, body) = post_json(&format!("{}/v1/events", server.url), "application/x-ndjson", &chunk.join("\n"));
        assert_eq!((status, body["accepted"].as_u64()), (200, Some(chunk.len() as u64)), "{body}");
    }
    // The holdout ends on 1998-06-30: a consent change of someone who never
    // bought (so not judged) moves "now" there.
    let marker = r#"{"type":"consent","event_id":"end","customer_id":"nobody","timestamp":"1998-06-30T00:00:00Z","channels":{"email":false}}"#;
    let (status, body) = post_json(&format!("{}/v1/events", server.url), "application/json", marker);
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(1)), "{body}");
    let (status, rows) = post_json(&format!("{}/v1/sql", server.url), "text/plain", "SELECT * FROM model_quality");
    assert_eq!(status, 200, "{rows}");
    let live = &rows.as_array().unwrap()[0];
    assert_eq!((live["model"].as_str(), live["days_since"].as_f64()), (Some("mbgnbd"), Some(273.0)), "{rows}");

    let out = tempfile::tempdir().unwrap();
    let flags =
        ["--calibration-end", "1997-09-30", "--holdout-end", "1998-06-30", "--currency", "USD", "--model", "mbgnbd"];
    let (report, _) = backtest(&fixture("cdnow/cdnow_transactions.csv"), out.path(), &flags);
    let offline = &predictor(&report, "mbgnbd")["quality"];
    assert_eq!(live["customers"].as_u64(), offline["customers"].as_u64(), "{live} {offline}");
    for (column, key) in [
        ("expected_orders", "mean_expected_orders"),
        ("actual_orders", "mean_actual_orders"),
        ("mae", "mae"),
        ("rmse", "rmse"),
        ("auc", "auc"),
        ("brier", "brier"),
    ] {
        let (a, b) = (live[column].as_f64().unwrap(), offline[key].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-9 * b.abs(), "{column}: live {a}, patron backtest {b}");
    }
}
