//! Scoring kernels (DESIGN.md §6 targets on the 2-core reference machine):
//!
//! - `loglik/bgnbd_1m`: one BG/NBD log-likelihood + gradient evaluation over
//!   1,000,000 customers, already compressed to distinct (x, t_x, T).
//! - `fit/{bgnbd,mbgnbd}_1m`: a full maximum-likelihood fit from 1,000,000
//!   raw histories, compression included. Target ≤ 2 s (milestone), ≤ 0.3 s (goal).
//! - `fit/bgnbd_1m_std_errors`: the standard errors of that fit (the
//!   observed information: 8 gradient evaluations over the compressed
//!   histories), which every refit adds.
//! - `rescore/mbgnbd_10m`: P(alive), expected orders in 90 days and 12-month
//!   CLV for 10,000,000 customers. Target ≤ 1 s.
//! - `rescore/mbgnbd_1m_intervals`: the same scores plus each customer's
//!   90% CLV interval (delta method: 8 more whole-population scorings and 6
//!   order values per customer) for 1,000,000 customers, with the
//!   covariance of a real fit on them. Target: ready within 60 s of a refit.
//! - `score_one/*`: the per-event path for one customer (direct evaluation).
//! - `segments/1m`: RFM quintiles, named segments, tiers for 1,000,000 customers.
//!
//! Run: `cargo bench -p patron-benches --bench scoring` (or `benches/record.sh`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use patron_benches::{customers, histories, scorer};
use patron_score::{
    ClvConfig, CompressedHistories, ParameterCovariance, PurchaseModel, PurchaseParams, Scorer, SegmentConfig,
    SegmentInput, SpendHistory, fit_gamma_gamma, fit_purchase_model, gamma_gamma_uncertainty, purchase_log_likelihood,
    purchase_uncertainty, segment_population,
};

// mimalloc, as in the binary, so allocation costs match production.
use patron_alloc as _;

fn likelihood_and_fit(c: &mut Criterion) {
    let population = customers(1_000_000);
    let histories = histories(&population);
    let compressed = CompressedHistories::new(&histories).expect("valid histories");
    let params = scorer(PurchaseParams::BgNbd).purchase().to_owned();
    let mut group = c.benchmark_group("loglik");
    group.sample_size(20);
    group.bench_function("bgnbd_1m", |b| b.iter(|| purchase_log_likelihood(black_box(&params), &compressed)));
    group.bench_function("compress_1m", |b| b.iter(|| CompressedHistories::new(black_box(&histories))));
    group.finish();

    let mut group = c.benchmark_group("fit");
    group.sample_size(10);
    for model in [PurchaseModel::BgNbd, PurchaseModel::MbgNbd] {
        group.bench_function(format!("{model}_1m"), |b| b.iter(|| fit_purchase_model(model, black_box(&histories))));
    }
    let fitted = fit_purchase_model(PurchaseModel::BgNbd, &histories).expect("the bench population fits").params;
    group.bench_function("bgnbd_1m_std_errors", |b| {
        b.iter(|| purchase_uncertainty(black_box(&fitted), &compressed, patron_score::FIT_TIME_BUDGET))
    });
    group.finish();
}

fn rescore(c: &mut Criterion) {
    let population = customers(10_000_000);
    let mut group = c.benchmark_group("rescore");
    group.sample_size(10);
    for (name, model) in [("mbgnbd_10m", PurchaseParams::MbgNbd as fn(_) -> _), ("bgnbd_10m", PurchaseParams::BgNbd)] {
        let scorer = scorer(model);
        group.bench_function(name, |b| b.iter(|| scorer.score_all(black_box(&population))));
    }
    // The intervals at 1M, with the covariance of fits on those customers.
    let million = &population[..1_000_000];
    let fitted = fit_purchase_model(PurchaseModel::MbgNbd, &histories(million)).expect("MBG/NBD fits");
    let compressed = CompressedHistories::new(&histories(million)).expect("valid histories");
    let purchase = purchase_uncertainty(&fitted.params, &compressed, patron_score::FIT_TIME_BUDGET);
    let spends: Vec<SpendHistory> = million.iter().map(|c| c.spend).collect();
    let spend_fit = fit_gamma_gamma(&spends).expect("Gamma-Gamma fits");
    let spend = gamma_gamma_uncertainty(&spend_fit.params, &spends);
    let covariance = ParameterCovariance::from_row_major(&purchase.log_covariance, &spend.log_covariance);
    assert!(covariance.purchase.is_some() && covariance.spend.is_some(), "both fits give a covariance");
    let fitted_scorer = Scorer::new(fitted.params, Some(spend_fit.params), 35.0, &ClvConfig::default(), 1.0);
    group.bench_function("mbgnbd_1m_intervals", |b| {
        b.iter(|| fitted_scorer.score_all_with_intervals(black_box(million), &covariance))
    });
    group.finish();

    let scorer = scorer(PurchaseParams::MbgNbd);
    let mut group = c.benchmark_group("score_one");
    for (name, index) in [("typical", 0usize), ("heavy_buyer", heaviest(&population))] {
        let input = population[index];
        group.bench_function(name, |b| b.iter(|| scorer.score(black_box(&input))));
    }
    group.finish();
}

fn heaviest(population: &[patron_score::ScoreInput]) -> usize {
    (0..population.len()).max_by_key(|&i| population[i].frequency).unwrap_or(0)
}

fn segments(c: &mut Criterion) {
    let population = customers(1_000_000);
    let scores = scorer(PurchaseParams::MbgNbd).score_all(&population).expect("scores");
    let inputs: Vec<SegmentInput> = population
        .iter()
        .zip(&scores)
        .map(|(c, s)| SegmentInput {
            days_since_last_purchase: f64::from(c.tenure_days - c.recency_days),
            occasions: c.frequency + 1,
            revenue: c.spend.mean_repeat_value * f64::from(c.frequency + 1),
            clv: s.clv,
            p_alive: s.p_alive,
        })
        .collect();
    let mut group = c.benchmark_group("segments");
    group.sample_size(10);
    group.bench_function("1m", |b| b.iter(|| segment_population(black_box(&inputs), &SegmentConfig::default())));
    group.finish();
}

criterion_group!(benches, likelihood_and_fit, rescore, segments);
criterion_main!(benches);
