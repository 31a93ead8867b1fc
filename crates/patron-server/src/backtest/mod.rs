//! `patron backtest`: were the models right? Fit on a calibration period,
//! predict each customer's holdout purchases, P(alive) and CLV at its end,
//! then compare with what the customers did in the holdout period — and set
//! every figure against two baselines a marketer would use without a model
//! ([`baselines`]).
//!
//! The file is read twice: once into the calibration and holdout books, once
//! more into the book of the baselines' earlier period, whose length depends
//! on when the data starts. Only customers who bought in the calibration
//! period are judged, as in the BTYD literature (Fader, Hardie & Lee 2005).

mod baselines;
mod plots;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use patron_ingest::{FileReport, ReadOptions, ingest_file};
use patron_model::{Event, EventSink, SinkError, SubmitOutcome, Timestamp, Validator};
use patron_score::{
    CalibrationRow, History, HoldoutCase, PredictionQuality, assess, calibration_table, predict_holdout,
};
use patron_state::{CustomerBook, ScoringConfig, SharedBook, fit_models, score_book};
use serde_json::{Value, json};

use crate::cli::BacktestArgs;
use crate::config::Config;
use crate::output;
use baselines::{Baseline, PeriodTotals};

/// Calibration repeat counts shown in the calibration table; the last line holds this many or more.
const CALIBRATION_TABLE_LAST: u32 = 7;
const MS_PER_DAY: i64 = 86_400_000;

/// Routes each event to every period that contains its time.
struct Periods {
    periods: Vec<(Option<Timestamp>, Timestamp, SharedBook)>,
}

impl Periods {
    /// A period holds the events after `after` (exclusive) and up to `until` (inclusive).
    fn new(bounds: &[(Option<Timestamp>, Timestamp)]) -> Self {
        Self { periods: bounds.iter().map(|&(after, until)| (after, until, SharedBook::default())).collect() }
    }

    fn into_books(self) -> Vec<CustomerBook> {
        self.periods.into_iter().map(|(_, _, book)| book.into_inner()).collect()
    }
}

impl EventSink for Periods {
    fn submit(&self, events: Vec<Event>) -> Result<SubmitOutcome, SinkError> {
        let mut outcome = SubmitOutcome::default();
        for (after, until, book) in &self.periods {
            let inside: Vec<Event> = events
                .iter()
                .filter(|e| after.is_none_or(|a| e.timestamp > a) && e.timestamp <= *until)
                .cloned()
                .collect();
            if !inside.is_empty() {
                let got = book.submit(inside)?;
                outcome.accepted += got.accepted;
                outcome.duplicates += got.duplicates;
            }
        }
        Ok(outcome)
    }
}

/// One judged customer: the calibration summary, the model's predictions and the holdout.
struct Judged {
    customer_id: String,
    calibration_repeats: u32,
    expected_orders: f64,
    p_alive: f64,
    p_purchase: f64,
    clv: f64,
    holdout: PeriodTotals,
}

pub(crate) fn run(args: &BacktestArgs) -> Result<()> {
    let settings = args.config.as_deref().map(Config::load).transpose()?.unwrap_or_default();
    let currencies = settings.currencies(args.currency.as_deref())?;
    let base = currencies.base;
    let minor = base.minor_per_major();
    let parse = |flag: &str, text: &str| {
        Timestamp::parse_date_or_rfc3339(text)
            .with_context(|| format!("{flag} {text:?} is not a date or RFC 3339 time"))
    };
    let calibration_end = parse("--calibration-end", &args.calibration_end)?;
    let holdout_end = parse("--holdout-end", &args.holdout_end)?;
    if holdout_end <= calibration_end {
        bail!("--holdout-end {holdout_end} must be after --calibration-end {calibration_end}");
    }
    let config = ScoringConfig {
        model: args.model.into(),
        clv: settings.clv,
        time_unit: args.time_unit.into(),
        ..ScoringConfig::default()
    };
    let validator = Validator::new(currencies);
    let options = ReadOptions {
        format: args.format.map(Into::into),
        mapping: args.mapping.to_mapping(base.code()),
        source: None,
    };

    let first = Periods::new(&[(None, calibration_end), (Some(calibration_end), holdout_end)]);
    let report = read(args, &options, &validator, &first, "calibration and holdout")?;
    let mut books = first.into_books().into_iter();
    let (Some(calibration), Some(holdout)) = (books.next(), books.next()) else {
        bail!("internal: two periods were read, fewer came back")
    };
    print_read_report(&report, &calibration, &holdout);
    let Some(data_start) = calibration.records().iter().filter_map(|r| r.first_day()).min() else {
        bail!("no purchase on or before --calibration-end {calibration_end}: nothing to calibrate on");
    };
    let holdout_days = (holdout_end.millis() - calibration_end.millis()) as f64 / MS_PER_DAY as f64;
    // The baselines' "last period": as long as the holdout, or half the
    // calibration period when that is shorter, so the period before it still
    // has customers to learn the RFM cells from.
    let calibration_days = calibration_end.day() - data_start;
    let window_days = (holdout_days.round() as i32).min(calibration_days / 2).max(1);
    let window_start = Timestamp::from_millis(calibration_end.millis() - i64::from(window_days) * MS_PER_DAY);
    let second = Periods::new(&[(None, window_start)]);
    read(args, &options, &validator, &second, "the baselines' earlier period")?;
    let early = second.into_books().pop().unwrap_or_default();

    let fit_started = Instant::now();
    let fits = fit_models(&calibration, calibration_end, config.time_unit, base);
    crate::score::print_fits(&fits, config.model.name(), fit_started.elapsed().as_secs_f64());
    let Some(fit) = fits.params(config.model) else {
        bail!("the {} fit failed on the calibration period, so there is nothing to judge", config.model.name());
    };
    let scored = score_book(&calibration, &fits, &config, calibration_end, base)?;
    let unit_days = config.time_unit.days();
    let horizon = holdout_days / unit_days;

    let holdout_totals = PeriodTotals::by_customer(&holdout, minor);
    let mut judged = Vec::new();
    for (i, row) in calibration.records().iter().enumerate() {
        let (Some(input), Some(scores)) = (scored.inputs[i], scored.scores[i]) else { continue };
        let history = History::new(
            input.frequency,
            f64::from(input.recency_days) / unit_days,
            f64::from(input.tenure_days) / unit_days,
        );
        let predicted = predict_holdout(&fit.params, history, horizon)?;
        judged.push(Judged {
            customer_id: row.customer_id().to_owned(),
            calibration_repeats: input.frequency,
            expected_orders: predicted.expected_orders,
            p_alive: predicted.p_alive,
            p_purchase: predicted.p_purchase,
            clv: scores.clv,
            holdout: holdout_totals.get(row.customer_id()).copied().unwrap_or_default(),
        });
    }
    let model_cases: Vec<HoldoutCase> = judged
        .iter()
        .map(|j| HoldoutCase {
            calibration_repeats: j.calibration_repeats,
            expected_orders: j.expected_orders,
            actual_orders: j.holdout.occasions,
            p_purchase: j.p_purchase,
            predicted_value: j.clv,
            actual_revenue: j.holdout.revenue,
        })
        .collect();
    let scale = holdout_days / f64::from(window_days);
    let baselines = Baseline::all(&calibration, &early, calibration_end, window_start, scale, minor);
    let baseline_cases: Vec<(&Baseline, Vec<HoldoutCase>)> =
        baselines.iter().map(|b| (b, b.cases(&judged_keys(&judged), &model_cases))).collect();

    let mut judgements: Vec<(String, PredictionQuality, Vec<CalibrationRow>)> = vec![(
        config.model.name().to_owned(),
        assess(&model_cases),
        calibration_table(&model_cases, CALIBRATION_TABLE_LAST),
    )];
    for (baseline, cases) in &baseline_cases {
        judgements.push((baseline.name().to_owned(), assess(cases), calibration_table(cases, CALIBRATION_TABLE_LAST)));
    }

    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    output::write_parquet(&args.out.join("customers.parquet"), &customers_batch(&judged)?)?;
    let report_json = json!({
        "input": args.input.display().to_string(),
        "calibration_end": calibration_end.to_rfc3339(),
        "holdout_end": holdout_end.to_rfc3339(),
        "holdout_days": holdout_days,
        "time_unit": config.time_unit.name(),
        "model": config.model.name(),
        "currency": base.code(),
        "clv": config.clv,
        "customers_judged": judged.len(),
        "baseline_window_days": window_days,
        "baselines": baselines.iter().map(|b| json!({"name": b.name(), "how": b.description()})).collect::<Vec<_>>(),
        "model_params": output::model_params_json(&fits),
        "predictors": judgements.iter().map(|(name, quality, table)| json!({
            "name": name,
            "quality": quality,
            "calibration_table": table,
        })).collect::<Vec<Value>>(),
    });
    let report_path = args.out.join("report.json");
    std::fs::write(&report_path, serde_json::to_vec_pretty(&report_json)?)
        .with_context(|| format!("cannot write {}", report_path.display()))?;
    plots::calibration(&args.out.join("calibration.svg"), &judgements)?;
    plots::decile_lift(&args.out.join("decile_lift.svg"), &judgements)?;
    print_report(&judgements, judged.len(), holdout_days, window_days);
    println!(
        "\nWrote {}, {}, {} and {}.",
        args.out.join("customers.parquet").display(),
        report_path.display(),
        args.out.join("calibration.svg").display(),
        args.out.join("decile_lift.svg").display()
    );
    Ok(())
}

fn judged_keys(judged: &[Judged]) -> Vec<&str> {
    judged.iter().map(|j| j.customer_id.as_str()).collect()
}

fn read(
    args: &BacktestArgs,
    options: &ReadOptions,
    validator: &Validator,
    sink: &Periods,
    what: &str,
) -> Result<FileReport> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} reading {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("{} ({what})", args.input.display()));
    let report = ingest_file(&args.input, options, validator, sink, &|read, total| {
        bar.set_length(total);
        bar.set_position(read);
    })
    .with_context(|| format!("cannot read {}", args.input.display()))?;
    bar.finish_and_clear();
    Ok(report)
}

fn print_read_report(report: &FileReport, calibration: &CustomerBook, holdout: &CustomerBook) {
    println!(
        "Read {} {} records ({} rejected): {} customers in the calibration period, {} with a holdout purchase.",
        report.records,
        report.format.name(),
        report.rejections.total(),
        calibration.len(),
        holdout.records().iter().filter(|r| r.has_purchased()).count()
    );
    for r in report.rejections.kept().iter().take(5) {
        eprintln!("  rejected line {}: {}", r.position, r.error);
    }
}

/// The per-customer file: one row per judged customer.
fn customers_batch(judged: &[Judged]) -> Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("expected_holdout_orders", DataType::Float64, false),
        Field::new("actual_holdout_orders", DataType::Int64, false),
        Field::new("p_alive", DataType::Float64, false),
        Field::new("clv", DataType::Float64, false),
        Field::new("holdout_revenue", DataType::Float64, false),
        Field::new("calibration_repeats", DataType::Int64, false),
        Field::new("p_purchase_holdout", DataType::Float64, false),
    ]);
    let f64s = |f: fn(&Judged) -> f64| Arc::new(judged.iter().map(f).collect::<Float64Array>()) as ArrayRef;
    let i64s = |f: fn(&Judged) -> i64| Arc::new(judged.iter().map(f).collect::<Int64Array>()) as ArrayRef;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(judged.iter().map(|j| Some(j.customer_id.as_str())).collect::<StringArray>()),
        f64s(|j| j.expected_orders),
        i64s(|j| i64::from(j.holdout.occasions)),
        f64s(|j| j.p_alive),
        f64s(|j| j.clv),
        f64s(|j| j.holdout.revenue),
        i64s(|j| i64::from(j.calibration_repeats)),
        f64s(|j| j.p_purchase),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

fn print_report(
    judgements: &[(String, PredictionQuality, Vec<CalibrationRow>)],
    customers: usize,
    holdout_days: f64,
    window_days: i32,
) {
    println!(
        "\nHoldout of {holdout_days:.0} days, {customers} customers judged (baselines learn from the last {window_days} days of calibration):"
    );
    println!(
        "  {:<14} {:>10} {:>10} {:>8} {:>8} {:>7} {:>7} {:>13}",
        "predictor", "mean pred", "mean act", "MAE", "RMSE", "AUC", "Brier", "top-10% lift"
    );
    for (name, q, _) in judgements {
        println!(
            "  {:<14} {:>10.4} {:>10.4} {:>8.4} {:>8.4} {:>7} {:>7.4} {:>13.2}",
            name,
            q.mean_expected_orders,
            q.mean_actual_orders,
            q.mae,
            q.rmse,
            q.auc.map_or("-".to_owned(), |a| format!("{a:.4}")),
            q.brier,
            q.decile_lift.first().map_or(0.0, |d| d.lift)
        );
    }
    if let Some((name, _, table)) = judgements.first() {
        println!("\nCalibration table ({name}): mean holdout purchases by calibration repeat purchases");
        println!("  {:>8} {:>9} {:>10} {:>10}", "repeats", "customers", "expected", "actual");
        for row in table {
            let label =
                if row.or_more { format!("{}+", row.calibration_repeats) } else { row.calibration_repeats.to_string() };
            println!("  {label:>8} {:>9} {:>10.4} {:>10.4}", row.customers, row.expected_orders, row.actual_orders);
        }
    }
}
