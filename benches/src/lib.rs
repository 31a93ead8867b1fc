//! Shared inputs for Patron's criterion benches: synthetic populations drawn
//! from the BG/NBD process (see `patron-workload`), built once per bench.

use patron_score::{ClvConfig, GammaGammaParams, History, PurchaseParams, ScoreInput, Scorer};
use patron_workload::{Population, synthetic_customers};

/// Seed of every bench population, so runs compare like with like.
pub const SEED: u64 = 20_261_123;

/// `n` customers of the default (CDNOW-like, days) population.
pub fn customers(n: usize) -> Vec<ScoreInput> {
    synthetic_customers(&Population::default(), n, SEED)
}

/// The same customers as model histories in days.
pub fn histories(customers: &[ScoreInput]) -> Vec<History> {
    customers.iter().map(|c| History::new(c.frequency, f64::from(c.recency_days), f64::from(c.tenure_days))).collect()
}

/// A scorer with the population's true parameters and default CLV settings.
pub fn scorer(model: fn(patron_score::BetaGeoParams) -> PurchaseParams) -> Scorer {
    let population = Population::default();
    let spend: GammaGammaParams = population.spend;
    Scorer::new(model(population.purchase), Some(spend), 35.0, &ClvConfig::default(), 1.0)
}
