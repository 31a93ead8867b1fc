//! Patron's side of the `lifetimes` comparison (DESIGN.md §6: BG/NBD fit on
//! 1,000,000 customers ≤ 0.3 s and 50× faster than `lifetimes`, with the same
//! parameters to 1e-3 relative; 12-month CLV for 1,000,000 customers ≤ 0.1 s).
//!
//! Draws the customer summary (x, t_x, T in days, mean repeat order value)
//! from the BG/NBD synthetic population, writes it as `summary.csv` for
//! `lifetimes`, then times, each as the median of `--runs` runs:
//! - the BG/NBD maximum-likelihood fit (compression included);
//! - the Gamma-Gamma fit on the repeat buyers;
//! - 12-month CLV of every customer, with `lifetimes`' definition: twelve
//!   30-day months discounted at 1 % a month, margin 1.
//!
//! Writes `patron.json` (parameters, times) and `patron_clv.csv` (one CLV per
//! summary row) beside it. `benches/compare/fit_vs_lifetimes.sh` runs this in
//! release and then `fit_vs_lifetimes.py`, which does the same in `lifetimes`
//! and compares.
//!
//! Run: `cargo run --release -p patron-benches --example fit_vs_lifetimes -- OUT_DIR [customers] [runs]`

use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use patron_benches::{SEED, customers, histories};
use patron_score::{
    ClvConfig, PurchaseModel, PurchaseParams, Scorer, SpendHistory, fit_gamma_gamma, fit_purchase_model,
};
use patron_workload::{Population, synthetic_customers};

use patron_alloc as _;

/// `lifetimes`' default monthly discount rate in `customer_lifetime_value`.
const MONTHLY_DISCOUNT: f64 = 0.01;

fn median_seconds<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        last = Some(f());
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], last.expect("at least one run"))
}

fn main() -> Result<(), Box<dyn Error>> {
    patron_alloc::configure();
    let mut args = std::env::args().skip(1);
    let out_dir = PathBuf::from(args.next().ok_or("usage: fit_vs_lifetimes OUT_DIR [customers] [runs]")?);
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let runs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    std::fs::create_dir_all(&out_dir)?;

    let population = if n == 1_000_000 { customers(n) } else { synthetic_customers(&Population::default(), n, SEED) };
    let mut csv = String::with_capacity(n * 32);
    csv.push_str("frequency,recency,T,monetary_value\n");
    for c in &population {
        let value = if c.spend.is_informative() { c.spend.mean_repeat_value } else { 0.0 };
        writeln!(csv, "{},{},{},{value}", c.frequency, c.recency_days, c.tenure_days)?;
    }
    std::fs::write(out_dir.join("summary.csv"), csv)?;

    let histories = histories(&population);
    let (fit_s, fit) = median_seconds(runs, || fit_purchase_model(PurchaseModel::BgNbd, &histories));
    let fit = fit?;
    let PurchaseParams::BgNbd(bg) = fit.params else { return Err("BG/NBD fit returned another model".into()) };

    let spends: Vec<SpendHistory> = population.iter().map(|c| c.spend).filter(SpendHistory::is_informative).collect();
    let (gg_s, gg) = median_seconds(runs, || fit_gamma_gamma(&spends));
    let gg = gg?;

    let clv_config = ClvConfig {
        horizon_days: 360.0,
        annual_discount_rate: (1.0 + MONTHLY_DISCOUNT).powi(12) - 1.0,
        margin: 1.0,
        retention_cost_per_year: 0.0,
    };
    let fallback = spends.iter().map(|s| s.mean_repeat_value).sum::<f64>() / spends.len().max(1) as f64;
    let scorer = Scorer::new(fit.params, Some(gg.params), fallback, &clv_config, 1.0);
    let (clv_s, scores) = median_seconds(runs, || scorer.score_all(&population));
    let scores = scores?;

    let mut clv_csv = String::with_capacity(n * 20);
    clv_csv.push_str("clv\n");
    for s in &scores {
        writeln!(clv_csv, "{}", s.clv)?;
    }
    std::fs::write(out_dir.join("patron_clv.csv"), clv_csv)?;

    let report = format!(
        "{{\"customers\": {n}, \"runs\": {runs}, \"threads\": {threads},\n \
         \"bgnbd\": {{\"r\": {r:e}, \"alpha\": {alpha:e}, \"a\": {a:e}, \"b\": {b:e}, \"log_likelihood\": {ll:e}, \"seconds\": {fit_s}}},\n \
         \"gamma_gamma\": {{\"p\": {p:e}, \"q\": {q:e}, \"v\": {v:e}, \"customers\": {ggn}, \"seconds\": {gg_s}}},\n \
         \"clv_12_months\": {{\"monthly_discount_rate\": {MONTHLY_DISCOUNT}, \"month_days\": 30, \"seconds\": {clv_s}, \"note\": \"score_all also computes P(alive), expected orders in 90 and 365 days, the 30-day purchase probability and the next order date\"}}}}\n",
        threads = rayon::current_num_threads(),
        r = bg.r,
        alpha = bg.alpha,
        a = bg.a,
        b = bg.b,
        ll = fit.log_likelihood,
        p = gg.params.p,
        q = gg.params.q,
        v = gg.params.gamma,
        ggn = spends.len(),
    );
    std::fs::write(out_dir.join("patron.json"), &report)?;
    print!("{report}");
    Ok(())
}
