//! `patron eval-recs`: offline evaluation of the recommender on a
//! transactions file (see `patron_state::evaluate` for the protocol).

use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use patron_ingest::{ReadOptions, ingest_file};
use patron_model::{Currency, CurrencyTable, Event, EventSink, SinkError, SubmitOutcome, Validator};
use patron_score::Similarity;
use patron_state::evaluate::{EvalConfig, EvalReport, TestWindow, evaluate};
use patron_state::items::ItemConfig;
use patron_state::{BlendConfig, DiscoverWeights};
use serde_json::json;

use crate::cli::{EvalRecsArgs, SimilarityArg};

/// Keeps every validated event in memory (the evaluation sorts them by time).
#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn submit(&self, events: Vec<Event>) -> Result<SubmitOutcome, SinkError> {
        let accepted = events.len();
        self.0.lock().map_err(|_| SinkError::Unavailable("collector poisoned".into()))?.extend(events);
        Ok(SubmitOutcome { accepted, ..SubmitOutcome::default() })
    }
}

fn config_of(args: &EvalRecsArgs) -> Result<EvalConfig> {
    if let (Some(from), Some(until)) = (args.test_from, args.test_until)
        && from >= until
    {
        bail!("--test-from must be before --test-until");
    }
    if args.k == 0 || args.k > 1000 {
        bail!("--k must be between 1 and 1000, got {}", args.k);
    }
    if !(args.discover_popular_weight >= 0.0 && args.discover_trend_exponent.is_finite()) {
        bail!("--discover-popular-weight must not be negative and --discover-trend-exponent must be a number");
    }
    if !(args.repeat_half_life > 0.0 && args.shrinkage >= 0.0 && args.bought_with_weight >= 0.0) {
        bail!("--repeat-half-life must be positive; --shrinkage and --bought-with-weight not negative");
    }
    let similarity = match args.similarity {
        SimilarityArg::Cosine => Similarity::Cosine,
        SimilarityArg::ShrunkCosine => Similarity::ShrunkCosine { shrinkage: args.shrinkage },
        SimilarityArg::Jaccard => Similarity::Jaccard,
    };
    Ok(EvalConfig {
        k: args.k,
        refresh_days: args.refresh_days.max(1),
        items: ItemConfig {
            similarity,
            repeat_half_life_occasions: args.repeat_half_life,
            cross_basket_weight: args.cross_basket_weight.max(0.0),
            counters_per_product: args.counters,
            neighbours: args.neighbours,
            ..ItemConfig::default()
        },
        blend: BlendConfig {
            bought_with_weight: args.bought_with_weight,
            repurchase_bias: args.repurchase_bias,
            anchors: args.anchors,
            trend_exponent: args.trend_exponent,
            discover: DiscoverWeights {
                trend_exponent: args.discover_trend_exponent,
                popular_weight: args.discover_popular_weight,
            },
            min_repurchase_rate: args.min_repurchase_rate,
            ..BlendConfig::default()
        },
        profile_limit: args.history,
        window: TestWindow { replay_until_day: args.data_until, from_day: args.test_from, until_day: args.test_until },
    })
}

pub(crate) fn run(args: &EvalRecsArgs) -> Result<()> {
    let started = Instant::now();
    let config = config_of(args)?;
    let base = Currency::from_code(&args.currency)
        .with_context(|| format!("--currency {:?} is not an ISO 4217 code Patron knows", args.currency))?;
    let validator = Validator::new(CurrencyTable::only(base));
    let options = ReadOptions {
        format: args.format.map(Into::into),
        mapping: args.mapping.to_mapping(base.code()),
        source: None,
    };
    let sink = Collect::default();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("reading {}", args.input.display()));
    let report = ingest_file(&args.input, &options, &validator, &sink, &|read, total| {
        bar.set_length(total);
        bar.set_position(read);
    })
    .with_context(|| format!("cannot read {}", args.input.display()))?;
    let events = sink.0.into_inner().unwrap_or_else(|p| p.into_inner());
    if events.is_empty() {
        bail!("nothing could be read from {}: no valid events", args.input.display());
    }
    let by_field: Vec<String> = report.rejections.by_field().iter().map(|(f, n)| format!("{f}: {n}")).collect();
    eprintln!(
        "read {} events from {}; {} rows rejected{}",
        events.len(),
        args.input.display(),
        report.rejections.total(),
        if by_field.is_empty() { String::new() } else { format!(" ({})", by_field.join(", ")) }
    );
    bar.set_message("replaying and evaluating");
    let result = evaluate(&events, &config, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    print_report(&result);
    let seconds = started.elapsed().as_secs_f64();
    let command: Vec<String> = std::env::args().collect();
    let json = json!({
        "input": args.input.display().to_string(),
        "command": command.join(" "),
        "commit": crate::provenance::commit(),
        "machine": crate::provenance::machine(),
        "seconds": seconds,
        "config": {
            "k": config.k,
            "refresh_days": config.refresh_days,
            "history": config.profile_limit,
            "similarity": config.items.similarity.name(),
            "repeat_half_life_occasions": config.items.repeat_half_life_occasions,
            "co_purchase_half_life_days": config.items.co_purchase_decay.half_life_days,
            "counters_per_product": config.items.counters_per_product,
            "neighbours": config.items.neighbours,
            "cross_basket_weight": config.items.cross_basket_weight,
            "bought_with_weight": config.blend.bought_with_weight,
            "repurchase_bias": config.blend.repurchase_bias,
            "min_repurchase_rate": config.blend.min_repurchase_rate,
            "anchors": config.blend.anchors,
            "trend_exponent": config.blend.trend_exponent,
            "discover_trend_exponent": config.blend.discover.trend_exponent,
            "discover_popular_weight": config.blend.discover.popular_weight,
            "trend_half_life_days": config.items.trend_decay.half_life_days,
            "data_until": args.data_until.map(day_text),
            "test_from": args.test_from.map(day_text),
            "test_until": args.test_until.map(day_text),
        },
        "result": result,
    });
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("\nEvaluated in {seconds:.1}s; wrote {}", args.out.display());
    Ok(())
}

/// A day since the epoch as `YYYY-MM-DD`.
fn day_text(day: i32) -> String {
    patron_model::Timestamp::from_millis(i64::from(day) * 86_400_000).to_rfc3339()[..10].to_owned()
}

fn print_report(r: &EvalReport) {
    let cut = r.window.replay_until_day.map_or_else(String::new, |d| format!(" (data cut at {})", day_text(d)));
    let window = match (r.window.from_day, r.window.until_day) {
        (None, None) => cut,
        (from, until) => format!(
            "{cut} whose last basket is in [{}, {})",
            from.map_or_else(|| "start".to_owned(), day_text),
            until.map_or_else(|| "end".to_owned(), day_text)
        ),
    };
    println!(
        "{} customers, {} baskets, {} products; {} test customers{window} (explore subset: {}); similarity {}",
        r.customers, r.baskets, r.products, r.test_customers, r.explore_customers, r.similarity
    );
    println!(
        "\n{:<12} {:>8} {:>8} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}",
        "method",
        format!("HR@{}", r.k),
        format!("R@{}", r.k),
        format!("NDCG@{}", r.k),
        format!("MAP@{}", r.k),
        "coverage",
        "new HR",
        "new R",
        "new NDCG"
    );
    for m in &r.methods {
        println!(
            "{:<12} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4}   {:>8.4} {:>8.4} {:>8.4}",
            m.method,
            m.all.hit_rate,
            m.all.recall,
            m.all.ndcg,
            m.all.map,
            m.all.coverage,
            m.explore.hit_rate,
            m.explore.recall,
            m.explore.ndcg
        );
    }
}
