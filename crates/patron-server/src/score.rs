//! `patron score`: batch scoring of a transactions file through the same
//! ingest → state → kernels path the streaming engine uses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use patron_ingest::{FileReport, ReadOptions, ingest_file};
use patron_model::{Currency, Event, EventSink, SinkError, SubmitOutcome, Timestamp, Validator};
use patron_score::ClvConfig;
use patron_state::{
    BlendConfig, CustomerBook, ModelFits, ScoredBook, ScoringConfig, SharedBook, customers_batch, fit_models,
    recommend_all, recommendations_batch, score_book,
};

use crate::cli::ScoreArgs;
use crate::config::Config;
use crate::output;

/// Drops events after the observation end (calibration period), counting them.
struct ObservationWindow {
    inner: SharedBook,
    end: Option<Timestamp>,
    ignored: AtomicU64,
}

impl EventSink for ObservationWindow {
    fn submit(&self, mut events: Vec<Event>) -> Result<SubmitOutcome, SinkError> {
        if let Some(end) = self.end {
            let before = events.len();
            events.retain(|e| e.timestamp <= end);
            self.ignored.fetch_add((before - events.len()) as u64, Ordering::Relaxed);
        }
        self.inner.submit(events)
    }
}

pub(crate) fn run(args: &ScoreArgs) -> Result<()> {
    let started = Instant::now();
    let settings = args.config.as_deref().map(Config::load).transpose()?.unwrap_or_default();
    let currencies = settings.currencies(args.currency.as_deref())?;
    let base = currencies.base;
    if args.currency.is_none() && settings.currency.is_none() && args.source.is_none() {
        // A file's amounts carry no currency: a wrong guess would mislabel every figure.
        eprintln!(
            "note: no --currency given: the file's amounts are taken as {base}; pass --currency CODE if they are not"
        );
    }
    let end = args
        .observation_end
        .as_deref()
        .map(|s| {
            Timestamp::parse_date_or_rfc3339(s)
                .with_context(|| format!("--observation-end {s:?} is not a date or RFC 3339 time"))
        })
        .transpose()?;
    let clv = ClvConfig {
        horizon_days: args.horizon_days.unwrap_or(settings.clv.horizon_days),
        annual_discount_rate: args.discount_rate.unwrap_or(settings.clv.annual_discount_rate),
        margin: args.margin.unwrap_or(settings.clv.margin),
        retention_cost_per_year: args.retention_cost_per_year.unwrap_or(settings.clv.retention_cost_per_year),
    };
    clv.check().context("--horizon-days, --discount-rate, --margin or --retention-cost-per-year")?;
    let config =
        ScoringConfig { model: args.model.into(), clv, time_unit: args.time_unit.into(), ..ScoringConfig::default() };

    let validator = Validator::new(currencies);
    let options = ReadOptions {
        format: args.format.map(Into::into),
        mapping: args.mapping.to_mapping(base.code()),
        source: args.source,
    };
    let window = ObservationWindow { inner: SharedBook::default(), end, ignored: AtomicU64::new(0) };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} reading {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(args.input.display().to_string());
    let report = ingest_file(&args.input, &options, &validator, &window, &|read, total| {
        bar.set_length(total);
        bar.set_position(read);
    })
    .with_context(|| format!("cannot score {}", args.input.display()))?;
    bar.finish_and_clear();
    print_read_report(&report, window.ignored.load(Ordering::Relaxed));
    let book = window.inner.into_inner();
    if report.outcome.accepted == 0 {
        bail!("nothing could be read from {}: no valid events", args.input.display());
    }
    let now = match (end, book.watermark()) {
        (Some(end), _) => end,
        (None, Some(w)) => w,
        (None, None) => bail!("no event times to score against"),
    };

    let spinner = ProgressBar::new_spinner().with_message("fitting BG/NBD, MBG/NBD, Pareto/NBD and Gamma-Gamma");
    spinner.enable_steady_tick(Duration::from_millis(120));
    let fit_started = Instant::now();
    let fits = fit_models(&book, now, config.time_unit, base);
    let fit_seconds = fit_started.elapsed().as_secs_f64();
    spinner.finish_and_clear();
    print_fits(&fits, config.model.name(), fit_seconds);

    let (scored, failure) = match score_book(&book, &fits, &config, now, base) {
        Ok(scored) => (scored, None),
        Err(e) => (ScoredBook::unscored(&book, now, base), Some(e)),
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let batch = customers_batch(&book, &scored, base, &config)?;
    let customers_path = args.out.join("customers.parquet");
    output::write_parquet(&customers_path, &batch)?;
    let params_path = args.out.join("model_params.json");
    output::write_model_params(&params_path, &fits)?;
    let recommendations = write_recommendations(&book, now, args)?;

    if let Some(e) = failure {
        let recs_note = recommendations
            .as_ref()
            .map(|(path, _)| format!("; {} holds the recommendations (they need no fit)", path.display()))
            .unwrap_or_default();
        bail!(
            "{e}\n{} holds the {} customers' summaries without scores; {} lists the fits{recs_note}",
            customers_path.display(),
            book.len(),
            params_path.display()
        );
    }
    print_top(&book, &scored, args.top, base);
    if let Some((path, rows)) = recommendations {
        let kind = if args.new_only { "discover (never bought)" } else { "mixed" };
        println!(
            "\nWrote {rows} {kind} recommendations (top {} per customer) to {}.",
            args.recommendations,
            path.display()
        );
    }
    println!(
        "\nScored {} customers as of {} in {:.2}s ({} model). Wrote {} and {}.",
        book.len(),
        now,
        started.elapsed().as_secs_f64(),
        config.model,
        customers_path.display(),
        params_path.display()
    );
    Ok(())
}

/// `recommendations.parquet`: the top `--recommendations` products of every
/// customer, from the same product statistics, neighbour kernel and blend
/// the server uses. Skipped with `--recommendations 0`.
fn write_recommendations(
    book: &CustomerBook,
    now: Timestamp,
    args: &ScoreArgs,
) -> Result<Option<(std::path::PathBuf, usize)>> {
    if args.recommendations == 0 {
        return Ok(None);
    }
    let model = book.items().refresh(now.day());
    let lists = recommend_all(
        book.records().par_iter(),
        &model,
        &BlendConfig::default(),
        args.recommendations,
        args.new_only,
        usize::MAX,
    );
    let batch = recommendations_batch(&lists, book.catalog(), &model, None)?;
    let path = args.out.join("recommendations.parquet");
    output::write_parquet(&path, &batch)?;
    Ok(Some((path, batch.num_rows())))
}

fn print_read_report(report: &FileReport, ignored_after_end: u64) {
    if let Some(columns) = &report.columns {
        println!("Columns: {columns}; time format {}", report.time_format.as_deref().unwrap_or("unknown"));
    }
    if let Some(note) = report.refund_note() {
        println!("{note}");
    }
    println!(
        "Read {} {} records: {} events accepted, {} duplicates, {} after the observation end ignored, {} records rejected.",
        report.records,
        report.format.name(),
        report.outcome.accepted,
        report.outcome.duplicates,
        ignored_after_end,
        report.rejections.total()
    );
    let log = &report.rejections;
    if log.total() > 0 {
        // A few of each kind, so no kind of error hides behind a more frequent one.
        let shown = log.examples(patron_ingest::EXAMPLES_PER_FIELD);
        for r in &shown {
            eprintln!("  rejected line {}: {}", r.position, r.error);
        }
        if log.total() as usize > shown.len() {
            eprintln!("  … and {} more", log.total() as usize - shown.len());
        }
        let by_field: Vec<String> = log.by_field().iter().map(|(f, n)| format!("{f}: {n}")).collect();
        eprintln!("  rejections by field: {}", by_field.join(", "));
    }
}

pub(crate) fn print_fits(fits: &ModelFits, chosen: &str, seconds: f64) {
    println!("\nModels (time unit: {}, fitted in {seconds:.2}s):", fits.time_unit.name());
    for (model, fit) in &fits.purchase {
        let marker = if model.name() == chosen { "*" } else { " " };
        match fit {
            Ok(f) => {
                let params: Vec<String> = f.params.named().iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
                println!(
                    " {marker}{:<11} {:<52} LL {:>12.2}  ({} customers, {} iterations)",
                    model.name(),
                    params.join(" "),
                    f.log_likelihood,
                    f.customers,
                    f.iterations
                );
                for bound in &f.boundary {
                    println!("   {:<11} warning: {bound}", "");
                }
            }
            Err(e) => println!(" {marker}{:<11} fit failed: {e}", model.name()),
        }
    }
    match &fits.gamma_gamma {
        Ok(f) => {
            let params: Vec<String> = f.params.named().iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
            println!(
                "  {:<11} {:<52} LL {:>12.2}  ({} repeat customers)",
                "gamma_gamma",
                params.join(" "),
                f.log_likelihood,
                f.customers
            );
        }
        Err(e) => println!(
            "  gamma_gamma fit failed: {e}; order values fall back to the mean occasion value {:.2}",
            fits.mean_occasion_value
        ),
    }
}

fn print_top(book: &CustomerBook, scored: &ScoredBook, n: usize, currency: Currency) {
    let mut order: Vec<usize> = (0..book.len()).filter(|&i| scored.scores[i].is_some()).collect();
    let clv = |i: usize| scored.scores[i].map_or(f64::NEG_INFINITY, |s| s.clv);
    order.sort_by(|&a, &b| clv(b).total_cmp(&clv(a)));
    if n == 0 || order.is_empty() {
        return;
    }
    println!("\nTop {} customers by CLV ({currency}):", n.min(order.len()));
    println!(
        "  {:<16} {:>6} {:>10} {:>7} {:>9} {:<18} {:<14}",
        "customer_id", "orders", "revenue", "p_alive", "clv", "rfm_segment", "value_tier"
    );
    for &i in order.iter().take(n) {
        let Some(record) = book.records().row(i) else { continue };
        let (Some(s), Some(g)) = (scored.scores[i], scored.segments[i]) else { continue };
        println!(
            "  {:<16} {:>6} {:>10.2} {:>7.3} {:>9.2} {:<18} {:<14}",
            record.customer_id(),
            record.orders,
            currency.to_major(record.revenue_minor),
            s.p_alive,
            s.clv,
            g.rfm_segment.as_str(),
            g.value_tier.as_str()
        );
    }
}
